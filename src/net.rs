//! The network, as the helpers use it (the root daemon itself opens no socket but D-Bus).
//!
//! Rules a hostile update server cannot bend:
//! - a `BinaryURL` is https, or http only when the configured server URL is http on the same
//!   host; redirects never change host or scheme;
//! - no link-local, multicast or unspecified address, whether written in the URL or resolved
//!   from a name; loopback only when the configured server itself is on loopback;
//! - a download has an overall deadline from its size and a minimum rate, never more bytes
//!   than advertised, and a per-read timeout.

use crate::error::{Error, Result};
use crate::helper::protocol;
pub use crate::helper::request::{
    host_is_loopback, CheckRequest, FetchMeta, FetchRequest, HttpGet, ProxySettings, PROXY_ENV,
};
use crate::helper::request::{FetchDone, HttpStatus};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// How long to wait for a TCP/TLS connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Most bytes of a check answer that are read.
pub const MAX_RESPONSE_BYTES: usize = 8 << 20;
/// A download may take at least this long, however small.
pub const MIN_DOWNLOAD_DEADLINE: Duration = Duration::from_secs(60);
/// Most redirects followed.
const MAX_REDIRECTS: usize = 5;

/// Runs a future to completion on a small runtime of its own (helpers are short programs).
pub fn run_blocking<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the async runtime: {e}")))?
        .block_on(f)
}

fn forbidden(ip: IpAddr, allow_loopback: bool) -> Option<&'static str> {
    let v6_link_local = |v: &std::net::Ipv6Addr| v.segments()[0] & 0xffc0 == 0xfe80;
    match ip {
        IpAddr::V4(v) if v.is_link_local() => Some("link-local"),
        IpAddr::V4(v) if v.is_multicast() || v.is_broadcast() => Some("multicast"),
        IpAddr::V4(v) if v.is_unspecified() => Some("unspecified"),
        IpAddr::V4(v) if v.is_loopback() && !allow_loopback => Some("loopback"),
        IpAddr::V6(v) if v6_link_local(&v) => Some("link-local"),
        IpAddr::V6(v) if v.is_multicast() => Some("multicast"),
        IpAddr::V6(v) if v.is_unspecified() => Some("unspecified"),
        IpAddr::V6(v) if v.is_loopback() && !allow_loopback => Some("loopback"),
        IpAddr::V6(v) => v
            .to_ipv4_mapped()
            .and_then(|m| forbidden(IpAddr::V4(m), allow_loopback)),
        _ => None,
    }
}

/// What addresses the update server (and the binaries it points to) may be reached at.
#[derive(Debug, Clone, Copy)]
pub struct AddrPolicy {
    /// Loopback is allowed only when the configured server is on loopback.
    pub allow_loopback: bool,
}

impl AddrPolicy {
    /// The policy for a configured server URL.
    pub fn for_server(server: &reqwest::Url) -> Self {
        AddrPolicy {
            allow_loopback: host_is_loopback(server),
        }
    }

    fn check_url(&self, url: &reqwest::Url) -> std::result::Result<(), String> {
        let ip = match url.host() {
            Some(url::Host::Ipv4(v)) => IpAddr::V4(v),
            Some(url::Host::Ipv6(v)) => IpAddr::V6(v),
            Some(url::Host::Domain(_)) => return Ok(()),
            None => return Err(format!("{url} has no host")),
        };
        match forbidden(ip, self.allow_loopback) {
            Some(kind) => Err(format!("{url} points to a {kind} address ({ip})")),
            None => Ok(()),
        }
    }
}

/// Pydio's own download host: where its update server's `BinaryURL`s point today.
pub const PYDIO_DOWNLOAD_HOST: &str = "download.pydio.com";

/// Checks a release's `BinaryURL` against the configured server URL (see the module rules)
/// and the hosts downloads may come from: the server's own, or one of `download_hosts`
/// (`[server] download_hosts`). So a hostile update server cannot make the helper send blind
/// GET requests to any host it likes, an intranet address included.
pub fn check_binary_url(
    raw: &str,
    server: &str,
    download_hosts: &[String],
) -> Result<reqwest::Url> {
    let refuse = |why: String| {
        Error::DownloadFailed(format!(
            "the update server's BinaryURL is refused: {why}; nothing was downloaded"
        ))
    };
    let server = reqwest::Url::parse(server)
        .map_err(|e| Error::InvalidArgument(format!("[server] url {server:?}: {e}")))?;
    let url =
        reqwest::Url::parse(raw).map_err(|e| refuse(format!("{raw:?} is not a URL ({e})")))?;
    match url.scheme() {
        "https" => {}
        "http" if server.scheme() == "http" && url.host_str() == server.host_str() => {}
        "http" => {
            return Err(refuse(format!(
                "{url} is plain http; only https is accepted, or http on the configured \
                 server's own host when that server is http"
            )))
        }
        other => return Err(refuse(format!("{url} uses the scheme {other:?}"))),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(refuse(format!("{url} carries credentials")));
    }
    AddrPolicy::for_server(&server)
        .check_url(&url)
        .map_err(refuse)?;
    // Hosts compared bare (an IPv6 literal without its brackets), case-insensitively.
    let bare = |h: Option<&str>| {
        h.unwrap_or_default()
            .trim_matches(['[', ']'])
            .to_ascii_lowercase()
    };
    let host = bare(url.host_str());
    let listed = download_hosts.iter().any(|h| h.eq_ignore_ascii_case(&host));
    if !listed && host != bare(server.host_str()) {
        let literal = match url.host() {
            Some(url::Host::Ipv4(v)) => private_or_loopback(IpAddr::V4(v)),
            Some(url::Host::Ipv6(v)) => private_or_loopback(IpAddr::V6(v)),
            _ => None,
        };
        return Err(refuse(match literal {
            Some(kind) => format!(
                "{url} points to a {kind} address that is neither the update server's host nor \
                 listed in [server] download_hosts"
            ),
            None => format!(
                "{url} is on {host}, neither the update server's host ({}) nor one of [server] \
                 download_hosts ({})",
                server.host_str().unwrap_or_default(),
                if download_hosts.is_empty() {
                    "none".to_string()
                } else {
                    download_hosts.join(", ")
                }
            ),
        }));
    }
    Ok(url)
}

/// `Some(kind)` for a private (RFC 1918, IPv6 unique-local, shared CGNAT) or loopback
/// address.
fn private_or_loopback(ip: IpAddr) -> Option<&'static str> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v) if v.is_loopback() => Some("loopback"),
        IpAddr::V4(v) if v.is_private() => Some("private (RFC 1918)"),
        IpAddr::V4(v) if v.octets()[0] == 100 && (v.octets()[1] & 0xc0) == 64 => {
            Some("shared (100.64.0.0/10)")
        }
        IpAddr::V6(v) if v.is_loopback() => Some("loopback"),
        IpAddr::V6(v) if (v.segments()[0] & 0xfe00) == 0xfc00 => Some("private (unique-local)"),
        _ => None,
    }
}

/// Resolves names, then drops every address the policy forbids.
struct FilteringResolver(AddrPolicy);

impl reqwest::dns::Resolve for FilteringResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let kept: Vec<SocketAddr> = all
                .iter()
                .copied()
                .filter(|a| forbidden(a.ip(), policy.allow_loopback).is_none())
                .collect();
            if kept.is_empty() {
                let why = all
                    .first()
                    .and_then(|a| forbidden(a.ip(), policy.allow_loopback))
                    .unwrap_or("no");
                return Err(
                    format!("{host} resolves only to {why} addresses, which are refused").into(),
                );
            }
            Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The HTTP client of a helper: rustls with the system's CA store (loaded only for `tls`:
/// plain http never needs it, and redirects never change the scheme), timeouts, proxies, the
/// address policy and a redirect policy that never leaves the original host and scheme.
pub fn client(
    proxy: &ProxySettings,
    read_timeout: Duration,
    policy: AddrPolicy,
    tls: bool,
) -> Result<reqwest::Client> {
    let redirect = reqwest::redirect::Policy::custom(|attempt| {
        let Some(first) = attempt.previous().first().cloned() else {
            return attempt.follow();
        };
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
        }
        let next = attempt.url();
        if next.scheme() != first.scheme() || next.host_str() != first.host_str() {
            let msg =
                format!("a redirect from {first} to {next} leaves the original host or scheme");
            return attempt.error(msg);
        }
        attempt.follow()
    });
    let mut builder = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(read_timeout)
        .user_agent(concat!("cells-updater/", env!("CARGO_PKG_VERSION")))
        .redirect(redirect)
        .tls_built_in_root_certs(tls)
        .dns_resolver(std::sync::Arc::new(FilteringResolver(policy)));
    let explicit = proxy
        .proxy
        .clone()
        .or_else(|| std::env::var("CELLS_UPDATE_HTTP_PROXY").ok())
        .filter(|p| !p.is_empty());
    if let Some(p) = explicit {
        let proxy = reqwest::Proxy::all(&p)
            .map_err(|e| Error::InvalidArgument(format!("proxy {p:?} is not usable: {e}")))?
            .no_proxy(reqwest::NoProxy::from_env());
        builder = builder.proxy(proxy);
    }
    builder
        .build()
        .map_err(|e| Error::ServerError(format!("cannot set up the HTTP client: {e}")))
}

/// The causes of a reqwest error on one line (reqwest's Display hides the root cause).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = c.source();
    }
    parts.join(": ")
}

/// A download's rate over a sliding window: once a whole window has passed, every window
/// must have brought at least `rate × window` bytes. Sampled once a second (and at most
/// `window + 2` samples kept), so a server that trickles a byte now and then to keep the read
/// timeout alive is stopped one window after it slows down, whatever the overall deadline.
#[derive(Debug)]
pub struct RateWindow {
    window: Duration,
    need: u64,
    /// (when, bytes so far), oldest first; the first one at or before `now - window`.
    samples: std::collections::VecDeque<(tokio::time::Instant, u64)>,
}

impl RateWindow {
    /// Starts at `now` with `done` bytes already held; `rate` 0 or `window` 0 turns it off.
    pub fn new(now: tokio::time::Instant, done: u64, window: Duration, rate: u64) -> Self {
        RateWindow {
            window,
            need: rate.saturating_mul(window.as_secs()),
            samples: std::collections::VecDeque::from([(now, done)]),
        }
    }

    /// Records `done` bytes at `now`; the bytes the last window brought when they are too
    /// few.
    pub fn sample(&mut self, now: tokio::time::Instant, done: u64) -> Option<u64> {
        if self.window.is_zero() || self.need == 0 {
            return None;
        }
        self.samples.push_back((now, done));
        let cut = now.checked_sub(self.window)?;
        // Keep exactly one sample at or before the cut: the base of the last window.
        while self.samples.len() > 1 && self.samples[1].0 <= cut {
            self.samples.pop_front();
        }
        let (at, base) = *self.samples.front()?;
        if at > cut {
            return None; // not one whole window yet
        }
        let got = done.saturating_sub(base);
        (got < self.need).then_some(got)
    }
}

/// `fetch`: GET the binary (with `Range` when resuming) and stream it as data frames.
pub async fn fetch(req: FetchRequest, out: &mut impl Write) -> Result<FetchDone> {
    let started = tokio::time::Instant::now();
    let deadline = started + req.deadline();
    let url = check_binary_url(&req.url, &req.server_url, &req.download_hosts)?;
    let server = reqwest::Url::parse(&req.server_url)
        .map_err(|e| Error::Internal(format!("[server] url: {e}")))?;
    let http = client(
        &req.proxy,
        Duration::from_secs(req.read_timeout_secs.max(1)),
        AddrPolicy::for_server(&server),
        url.scheme() == "https",
    )?;
    // Bytes gathered but not yet sent go out before an interruption is reported: the daemon
    // keeps everything it received for a resumed attempt.
    let mut frames = protocol::DataFrames::default();
    let interrupted = |out: &mut dyn Write, frames: &mut protocol::DataFrames, e: Error| {
        let _ = frames
            .flush(out)
            .and_then(|()| protocol::send_meta(out, &FetchMeta::Interrupted(true)));
        e
    };
    let fail = |what: String| Error::DownloadFailed(format!("downloading {url}: {what}"));
    let work = async {
        let mut get = http.get(url.clone());
        if req.offset > 0 {
            get = get.header(reqwest::header::RANGE, format!("bytes={}-", req.offset));
        }
        // The headers get one rate window (or one read timeout): a server that trickles them
        // a byte at a time would otherwise keep the read timeout alive forever.
        let headers = Duration::from_secs(req.window_secs.max(req.read_timeout_secs).max(1));
        let sent = match tokio::time::timeout(headers, get.send()).await {
            Ok(r) => r,
            Err(_) => {
                return Err(interrupted(
                    out,
                    &mut frames,
                    fail(format!(
                        "the server sent no complete response headers within {} s",
                        headers.as_secs()
                    )),
                ))
            }
        };
        let mut resp = match sent {
            Ok(r) => r,
            Err(e) if e.is_redirect() || e.is_builder() => return Err(fail(error_chain(&e))),
            Err(e) => return Err(interrupted(out, &mut frames, fail(error_chain(&e)))),
        };
        let status = resp.status();
        let start = match status {
            reqwest::StatusCode::OK => 0,
            reqwest::StatusCode::PARTIAL_CONTENT if req.offset > 0 => {
                match content_range_start(&resp) {
                    Some(s) if s == req.offset => s,
                    _ => return Err(fail("the server answered an unexpected range".into())),
                }
            }
            s if s.is_server_error() => {
                return Err(interrupted(
                    out,
                    &mut frames,
                    fail(format!("the server answered HTTP {s}")),
                ))
            }
            s => return Err(fail(format!("the server answered HTTP {s}"))),
        };
        if let Some(len) = resp.content_length() {
            if start.saturating_add(len) > req.size {
                return Err(fail(format!(
                    "the server announces {} bytes but {} were advertised; refusing it",
                    start.saturating_add(len),
                    req.size
                )));
            }
        }
        protocol::send_meta(out, &FetchMeta::Start(start))
            .map_err(|e| fail(format!("cannot pass the bytes on: {e}")))?;
        let mut done = start;
        let mut rate = RateWindow::new(
            tokio::time::Instant::now(),
            done,
            Duration::from_secs(req.window_secs),
            req.window_rate,
        );
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // `chunk` only polls the body for its next frame: dropping it for a tick loses
            // nothing.
            let next = tokio::select! {
                c = resp.chunk() => c,
                now = tick.tick() => {
                    if let Some(got) = rate.sample(now, done) {
                        return Err(interrupted(
                            out,
                            &mut frames,
                            fail(format!(
                                "the transfer slowed to {} bytes/s over the last {} s, below \
                                 [server] min_window_rate ({} bytes/s); {done} of {} bytes \
                                 arrived (a later attempt resumes)",
                                got / req.window_secs.max(1),
                                req.window_secs,
                                req.window_rate,
                                req.size
                            )),
                        ));
                    }
                    continue;
                }
            };
            let chunk = match next {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => {
                    return Err(interrupted(
                        out,
                        &mut frames,
                        fail(format!(
                            "the transfer broke after {done} of {} bytes ({})",
                            req.size,
                            error_chain(&e)
                        )),
                    ))
                }
            };
            if done + chunk.len() as u64 > req.size {
                return Err(fail(format!(
                    "the server sent more than the advertised {} bytes; refusing it",
                    req.size
                )));
            }
            done += chunk.len() as u64;
            frames
                .push(out, &chunk)
                .map_err(|e| fail(format!("cannot pass the bytes on: {e}")))?;
        }
        if done < req.size {
            return Err(interrupted(
                out,
                &mut frames,
                fail(format!(
                    "the connection closed after {done} of {} bytes",
                    req.size
                )),
            ));
        }
        frames
            .flush(out)
            .map_err(|e| fail(format!("cannot pass the bytes on: {e}")))?;
        Ok(FetchDone {
            bytes: done - start,
        })
    };
    match tokio::time::timeout_at(deadline, work).await {
        Ok(r) => r,
        Err(_) => Err(interrupted(
            out,
            &mut frames,
            fail(format!(
                "it did not finish within {} s (at least {} bytes/s are required; raise [server] \
                 min_download_rate's limit or check the network)",
                req.deadline().as_secs(),
                req.min_rate
            )),
        )),
    }
}

fn content_range_start(resp: &reqwest::Response) -> Option<u64> {
    let v = resp
        .headers()
        .get(reqwest::header::CONTENT_RANGE)?
        .to_str()
        .ok()?;
    let range = v.strip_prefix("bytes ")?;
    range.split('-').next()?.trim().parse().ok()
}

/// `check`: POST the update request; the answer's body goes out as data frames, its status
/// in the result.
pub async fn post_check(req: CheckRequest, out: &mut impl Write) -> Result<HttpStatus> {
    let url = endpoint(&req.server_url)?;
    let timeout = Duration::from_secs(req.timeout_secs.max(1));
    let http = client(
        &req.proxy,
        timeout,
        AddrPolicy::for_server(&url),
        url.scheme() == "https",
    )?;
    let unreachable = |e: reqwest::Error| {
        Error::ServerError(format!(
            "cannot reach the update server at {url}: {}; check the network, [server] url and \
             the proxy settings",
            error_chain(&e)
        ))
    };
    let work = async {
        let mut resp = http
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(req.body.to_string())
            .send()
            .await
            .map_err(unreachable)?;
        let status = resp.status();
        let mut total = 0usize;
        while let Some(chunk) = resp.chunk().await.map_err(unreachable)? {
            total += chunk.len();
            if total > MAX_RESPONSE_BYTES {
                return Err(Error::ServerError(format!(
                    "the update server's answer is larger than {MAX_RESPONSE_BYTES} bytes; refusing it"
                )));
            }
            for piece in chunk.chunks(protocol::DATA_CHUNK) {
                protocol::send_data(out, piece)
                    .map_err(|e| Error::ServerError(format!("cannot pass the answer on: {e}")))?;
            }
        }
        Ok(HttpStatus {
            status: status.as_u16(),
        })
    };
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or_else(|_| {
            Err(Error::ServerError(format!(
                "the update server at {url} did not answer within {} s; try again later",
                timeout.as_secs()
            )))
        })
}

/// The check endpoint for a configured base URL: an empty path becomes `/a/update-server`;
/// trailing slashes are trimmed and one is added.
pub fn endpoint(base: &str) -> Result<reqwest::Url> {
    let mut url = reqwest::Url::parse(base)
        .map_err(|e| Error::InvalidArgument(format!("update server URL {base:?}: {e}")))?;
    let path = url.path().trim_end_matches('/').to_string();
    let path = if path.is_empty() {
        "/a/update-server".to_string()
    } else {
        path
    };
    url.set_path(&format!("{path}/"));
    Ok(url)
}

/// `http-get`: GET the health URL; the result carries the status.
pub async fn http_get(req: HttpGet) -> Result<HttpStatus> {
    let url = reqwest::Url::parse(&req.url)
        .map_err(|e| Error::InvalidArgument(format!("health_url {:?}: {e}", req.url)))?;
    let timeout = Duration::from_secs(req.timeout_secs.max(1));
    // The admin configured this URL; loopback is where Cells usually answers.
    let http = client(
        &ProxySettings::default(),
        timeout,
        AddrPolicy {
            allow_loopback: true,
        },
        url.scheme() == "https",
    )?;
    match tokio::time::timeout(timeout, http.get(url.clone()).send()).await {
        Ok(Ok(r)) => Ok(HttpStatus {
            status: r.status().as_u16(),
        }),
        Ok(Err(e)) => Err(Error::UnitFailed(format!("{url}: {}", error_chain(&e)))),
        Err(_) => Err(Error::UnitFailed(format!(
            "{url} did not answer within {} s",
            timeout.as_secs()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_urls_follow_the_rules() {
        let ok = [
            (
                "https://download.pydio.com/cells",
                "https://updatecells.pydio.com/",
            ),
            ("http://127.0.0.1:8080/bin/x", "http://127.0.0.1:8080/"),
        ];
        let pydio = vec![PYDIO_DOWNLOAD_HOST.to_string()];
        for (u, s) in ok {
            check_binary_url(u, s, &pydio).unwrap_or_else(|e| panic!("{u}: {e}"));
        }
        // Listed hosts (case does not matter), a listed private address.
        let mirror = vec![
            "Mirror.Example".to_string(),
            "10.1.2.3".to_string(),
            "2001:db8::1".to_string(),
        ];
        for u in [
            "https://mirror.example/c",
            "https://10.1.2.3/c",
            "https://[2001:db8::1]/x",
        ] {
            check_binary_url(u, "https://updatecells.pydio.com/", &mirror)
                .unwrap_or_else(|e| panic!("{u}: {e}"));
        }
        // A hostile server sends the helper into the intranet, or anywhere else.
        for (u, why) in [
            ("https://10.0.0.1/admin", "private (RFC 1918)"),
            ("https://192.168.1.1/", "private (RFC 1918)"),
            ("https://172.16.0.9/", "private (RFC 1918)"),
            ("https://100.64.0.1/", "shared"),
            ("https://[fd00::1]/", "unique-local"),
            ("https://[::ffff:10.0.0.1]/", "private"),
            (
                "https://intranet.corp/x",
                "neither the update server's host",
            ),
            (
                "https://download.pydio.com.evil/x",
                "neither the update server's host",
            ),
        ] {
            let e = check_binary_url(u, "https://updatecells.pydio.com/", &pydio).unwrap_err();
            assert_eq!(e.name(), "DownloadFailed", "{u}");
            assert!(e.message().contains(why), "{u}: {e}");
        }
        let bad = [
            ("file:///etc/shadow", "https://u/", "scheme"),
            (
                "http://download.pydio.com/cells",
                "https://u/",
                "plain http",
            ),
            (
                "http://other.host/x",
                "http://127.0.0.1:8080/",
                "plain http",
            ),
            (
                "https://169.254.169.254/latest/meta-data",
                "https://u/",
                "link-local",
            ),
            ("https://[fe80::1]/x", "https://u/", "link-local"),
            ("https://224.0.0.1/x", "https://u/", "multicast"),
            (
                "https://127.0.0.1/x",
                "https://updatecells.pydio.com/",
                "loopback",
            ),
            ("https://0.0.0.0/x", "https://u/", "unspecified"),
            ("https://[::ffff:169.254.1.1]/x", "https://u/", "link-local"),
            ("https://user:pw@h/x", "https://u/", "credentials"),
            ("gopher://h/x", "https://u/", "scheme"),
            ("not a url", "https://u/", "not a URL"),
        ];
        for (u, s, why) in bad {
            let e = check_binary_url(u, s, &pydio).unwrap_err();
            assert_eq!(e.name(), "DownloadFailed", "{u}");
            assert!(e.message().contains(why), "{u}: {e}");
        }
    }

    #[test]
    fn deadline_follows_size_and_rate() {
        let mut r = FetchRequest {
            url: String::new(),
            server_url: String::new(),
            offset: 0,
            size: 64 << 20,
            min_rate: 64 << 10,
            min_deadline_secs: 60,
            read_timeout_secs: 60,
            window_rate: 32 << 10,
            window_secs: 60,
            proxy: ProxySettings::default(),
            download_hosts: Vec::new(),
        };
        assert_eq!(r.deadline(), Duration::from_secs(1024));
        r.size = 1000;
        assert_eq!(r.deadline(), MIN_DOWNLOAD_DEADLINE);
    }

    #[test]
    fn the_rate_window_stops_a_trickle_one_window_after_it_slows() {
        let t0 = tokio::time::Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut w = RateWindow::new(t0, 0, Duration::from_secs(60), 32 << 10);
        // Fast for 10 s, then one byte every second: the window that starts at 0 still holds
        // the fast part; the first window without it fails.
        let mut done = 0;
        for n in 1..=10 {
            done += 1 << 20;
            assert_eq!(w.sample(s(n), done), None, "second {n}");
        }
        let mut failed_at = None;
        for n in 11..=200 {
            done += 1;
            if w.sample(s(n), done).is_some() {
                failed_at = Some(n);
                break;
            }
        }
        // 32 KiB/s over 60 s is 1.875 MiB: the last window holds less from second 69 on.
        assert_eq!(failed_at, Some(69));
        assert!(w.samples.len() <= 62, "{} samples kept", w.samples.len());
        // Slow from the start: stopped after the first window, not before.
        let mut w = RateWindow::new(t0, 0, Duration::from_secs(60), 32 << 10);
        assert_eq!(w.sample(s(59), 100), None);
        assert_eq!(w.sample(s(60), 100), Some(100));
        // A steady 64 KiB/s download never fails; 0 turns the rule off.
        let mut w = RateWindow::new(t0, 0, Duration::from_secs(60), 32 << 10);
        assert!((1..=300).all(|n| w.sample(s(n), n * (64 << 10)).is_none()));
        let mut off = RateWindow::new(t0, 0, Duration::from_secs(60), 0);
        assert_eq!(off.sample(s(600), 0), None);
    }
}
