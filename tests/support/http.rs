//! A real HTTP/1.1 update server on loopback whose faults the tests choose. Shared by the
//! tests and by examples/update_server.rs (the demo's server), so it needs nothing but std.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// How the server delivers one binary.
#[derive(Clone, Debug)]
pub enum Delivery {
    /// The whole body, with Content-Length; honours `Range: bytes=N-`.
    Normal,
    /// Announce the full length, send `n` bytes, close. Only the first `times` requests.
    CutAfter { n: usize, times: usize },
    /// Send the body plus `extra` bytes, close-delimited (no Content-Length).
    TooLongNoLength { extra: usize },
    /// Send the body plus `extra` bytes with a truthful (too large) Content-Length.
    TooLongWithLength { extra: usize },
    /// The whole body in `chunk`-byte pieces, `delay_ms` apart (a slow mirror).
    Slow { chunk: usize, delay_ms: u64 },
    /// `first` bytes at once, then one byte every `every_ms` (a server that trickles to keep
    /// a read timeout alive while holding the job slot).
    Trickle { first: usize, every_ms: u64 },
    /// The response headers one byte every `every_ms`, never finished.
    TrickleHeaders { every_ms: u64 },
    /// `302 Found` to this URL.
    Redirect(String),
}

/// A recorded request.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

#[derive(Default)]
struct ServerState {
    catalog_status: u16,
    catalog_body: Vec<u8>,
    /// PydioEnterprise requests: the valid key and the Enterprise catalog.
    enterprise: Option<(String, Vec<u8>)>,
    binaries: HashMap<String, (Arc<Vec<u8>>, Delivery)>,
    requests: Vec<Request>,
    /// Like the real server: list only versions newer than the request's CurrentVersion.
    only_newer: bool,
    /// Append every request body (one line each) to this file.
    log: Option<std::path::PathBuf>,
}

/// The catalog as the real server filters it: entries newer than `current` only.
fn newer_than(catalog: &[u8], current: &str) -> Vec<u8> {
    let parse = |s: &str| semver::Version::parse(s.strip_prefix('v').unwrap_or(s)).ok();
    let Some(current) = parse(current) else {
        return catalog.to_vec();
    };
    let mut doc: serde_json::Value = match serde_json::from_slice(catalog) {
        Ok(d) => d,
        Err(_) => return catalog.to_vec(),
    };
    if let Some(list) = doc["AvailableBinaries"].as_array_mut() {
        list.retain(|p| {
            p["Version"]
                .as_str()
                .and_then(parse)
                .is_some_and(|v| v > current)
        });
    }
    doc.to_string().into_bytes()
}

/// A real HTTP/1.1 server on 127.0.0.1, one thread per connection, `Connection: close`.
pub struct TestServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<ServerState>>,
}

impl TestServer {
    pub fn start() -> TestServer {
        Self::start_on("127.0.0.1:0")
    }

    /// Listens on `addr` (e.g. `127.0.0.1:8080`).
    pub fn start_on(addr: &str) -> TestServer {
        let listener = TcpListener::bind(addr).expect("bind loopback");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(ServerState {
            catalog_status: 200,
            catalog_body: b"{}".to_vec(),
            ..Default::default()
        }));
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let st = st.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &st);
                });
            }
        });
        TestServer { addr, state }
    }

    /// Base URL to configure as `[server] url`.
    pub fn base(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// URL of a served binary.
    pub fn binary_url(&self, name: &str) -> String {
        format!("http://{}/bin/{name}", self.addr)
    }

    pub fn set_catalog(&self, status: u16, body: impl Into<Vec<u8>>) {
        let mut s = self.state.lock().unwrap();
        s.catalog_status = status;
        s.catalog_body = body.into();
    }

    /// Answers PydioEnterprise checks: `catalog` when `LicenseInfo.Key` is `key`, else 403
    /// with a Title, as the real server rejects a license.
    pub fn set_enterprise(&self, key: &str, catalog: impl Into<Vec<u8>>) {
        self.state.lock().unwrap().enterprise = Some((key.to_string(), catalog.into()));
    }

    pub fn put_binary(&self, name: &str, bytes: Vec<u8>, delivery: Delivery) {
        self.state
            .lock()
            .unwrap()
            .binaries
            .insert(name.to_string(), (Arc::new(bytes), delivery));
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Lists only versions newer than the request's CurrentVersion, as the real server does.
    pub fn only_newer(&self) {
        self.state.lock().unwrap().only_newer = true;
    }

    /// Appends every request body to `file`, one line each.
    pub fn log_to(&self, file: &std::path::Path) {
        self.state.lock().unwrap().log = Some(file.to_path_buf());
    }
}

fn serve(conn: TcpStream, state: &Mutex<ServerState>) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    let req = Request {
        method,
        path,
        headers,
        body,
    };
    // A proxied request names the origin in absolute form: route on its path alone.
    let route = match req.path.strip_prefix("http://") {
        Some(rest) => rest
            .find('/')
            .map_or("/".to_string(), |i| rest[i..].to_string()),
        None => req.path.clone(),
    };
    let mut out = conn;
    let (status, payload, delivery) = {
        let mut s = state.lock().unwrap();
        s.requests.push(req.clone());
        if let Some(log) = &s.log {
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
            {
                let _ = f.write_all(&req.body);
                let _ = f.write_all(b"\n");
            }
        }
        let asked: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
        let current = asked["CurrentVersion"].as_str().unwrap_or("").to_string();
        let filter = |catalog: &[u8]| {
            if s.only_newer {
                newer_than(catalog, &current)
            } else {
                catalog.to_vec()
            }
        };
        if req.method == "POST"
            && route == "/a/update-server/"
            && asked["PackageName"] == "PydioEnterprise"
        {
            match &s.enterprise {
                Some((key, catalog)) if asked["LicenseInfo"]["Key"] == key.as_str() => {
                    (200, Arc::new(filter(catalog)), Delivery::Normal)
                }
                _ => (
                    403,
                    Arc::new(
                        br#"{"Title":"Invalid license key","Detail":"the key was not issued by Pydio"}"#
                            .to_vec(),
                    ),
                    Delivery::Normal,
                ),
            }
        } else if req.method == "POST" && route == "/a/update-server/" {
            let body = if s.catalog_status == 200 {
                filter(&s.catalog_body)
            } else {
                s.catalog_body.clone()
            };
            (s.catalog_status, Arc::new(body), Delivery::Normal)
        } else if let Some(name) = route.strip_prefix("/bin/") {
            match s.binaries.get_mut(name) {
                Some((bytes, delivery)) => {
                    let d = delivery.clone();
                    if let Delivery::CutAfter { n, times } = d {
                        *delivery = if times > 1 {
                            Delivery::CutAfter {
                                n,
                                times: times - 1,
                            }
                        } else {
                            Delivery::Normal
                        };
                    }
                    (200, bytes.clone(), d)
                }
                None => (
                    404,
                    Arc::new(b"{\"Title\":\"no such binary\"}".to_vec()),
                    Delivery::Normal,
                ),
            }
        } else {
            (404, Arc::new(Vec::new()), Delivery::Normal)
        }
    };
    let reason = |s: u16| match s {
        200 => "OK",
        206 => "Partial Content",
        403 => "Forbidden",
        404 => "Not Found",
        _ => "Error",
    };
    match delivery {
        Delivery::Normal => {
            let range = req
                .headers
                .get("range")
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.strip_suffix('-'))
                .and_then(|n| n.parse::<usize>().ok());
            match range {
                Some(start) if status == 200 && start < payload.len() => {
                    write!(
                        out,
                        "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {}-{}/{}\r\nConnection: close\r\n\r\n",
                        payload.len() - start,
                        start,
                        payload.len() - 1,
                        payload.len()
                    )?;
                    out.write_all(&payload[start..])?;
                }
                _ => {
                    write!(
                        out,
                        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        reason(status),
                        payload.len()
                    )?;
                    out.write_all(&payload)?;
                }
            }
        }
        Delivery::CutAfter { n, .. } => {
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                payload.len()
            )?;
            out.write_all(&payload[..n.min(payload.len())])?;
            out.flush()?;
            out.shutdown(std::net::Shutdown::Both)?;
        }
        Delivery::Slow { chunk, delay_ms } => {
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                payload.len()
            )?;
            for piece in payload.chunks(chunk.max(1)) {
                out.write_all(piece)?;
                out.flush()?;
                std::thread::sleep(std::time::Duration::from_millis(delay_ms));
            }
        }
        Delivery::Trickle { first, every_ms } => {
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                payload.len()
            )?;
            let first = first.min(payload.len());
            out.write_all(&payload[..first])?;
            out.flush()?;
            for b in &payload[first..] {
                std::thread::sleep(std::time::Duration::from_millis(every_ms));
                out.write_all(std::slice::from_ref(b))?;
                out.flush()?;
            }
        }
        Delivery::TrickleHeaders { every_ms } => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Padding: {}\r\n\r\n",
                payload.len(),
                "x".repeat(4096)
            );
            for b in head.as_bytes() {
                out.write_all(std::slice::from_ref(b))?;
                out.flush()?;
                std::thread::sleep(std::time::Duration::from_millis(every_ms));
            }
        }
        Delivery::Redirect(to) => {
            write!(
                out,
                "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
        }
        Delivery::TooLongNoLength { extra } => {
            write!(out, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")?;
            out.write_all(&payload)?;
            out.write_all(&vec![0x41; extra])?;
        }
        Delivery::TooLongWithLength { extra } => {
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                payload.len() + extra
            )?;
            out.write_all(&payload)?;
            out.write_all(&vec![0x41; extra])?;
        }
    }
    out.flush()
}

/// One catalog entry as the update server writes it. `size_as_string` picks the int64 form.
pub fn package_json(
    version: &str,
    url: &str,
    size: usize,
    checksum: &str,
    signature: &str,
    size_as_string: bool,
) -> serde_json::Value {
    let size = if size_as_string {
        serde_json::Value::String(size.to_string())
    } else {
        serde_json::Value::from(size)
    };
    serde_json::json!({
        "PackageName": "PydioHome",
        "Version": version,
        "ReleaseDate": 1740420600,
        "Label": format!("Cells {version}"),
        "Description": "test release",
        "ChangeLog": "fixes",
        "BinaryURL": url,
        "BinaryChecksum": checksum,
        "BinarySignature": signature,
        "BinaryHashType": "sha256",
        "BinarySize": size,
        "BinaryOS": "linux",
        "BinaryArch": "amd64",
        "Status": "Released"
    })
}
