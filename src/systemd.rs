//! The systemd manager over D-Bus: facts about the managed unit, read from systemd's own API
//! rather than by parsing unit files.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;
use zbus::zvariant::OwnedObjectPath;

/// Longest wait for one call to systemd.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(25);

/// `ExecStart` entry as systemd reports it: (path, argv, ignore_failure, start/exit times, pid,
/// code, status).
pub type ExecCommand = (String, Vec<String>, bool, u64, u64, u64, u64, u32, i32, i32);

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
trait Manager {
    fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn reset_failed_unit(&self, name: &str) -> zbus::Result<()>;
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn reload(&self) -> zbus::Result<()>;
    fn subscribe(&self) -> zbus::Result<()>;
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn start_transient_unit(
        &self,
        name: &str,
        mode: &str,
        properties: &[(&str, zbus::zvariant::Value<'_>)],
        aux: &[(&str, Vec<(&str, zbus::zvariant::Value<'_>)>)],
    ) -> zbus::Result<OwnedObjectPath>;
    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: OwnedObjectPath,
        unit: String,
        result: String,
    ) -> zbus::Result<()>;
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Unit",
    default_service = "org.freedesktop.systemd1"
)]
trait Unit {
    #[zbus(property)]
    fn active_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn sub_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn load_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn drop_in_paths(&self) -> zbus::Result<Vec<String>>;
    #[zbus(property)]
    fn asserts(&self) -> zbus::Result<Vec<(String, bool, bool, String, i32)>>;
    #[zbus(property)]
    fn unit_file_state(&self) -> zbus::Result<String>;
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Timer",
    default_service = "org.freedesktop.systemd1"
)]
trait Timer {
    #[zbus(property, name = "NextElapseUSecRealtime")]
    fn next_elapse_usec_realtime(&self) -> zbus::Result<u64>;
}

/// What `cells-updater doctor` reports about a timer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TimerFacts {
    /// `LoadState`.
    pub load_state: String,
    /// `UnitFileState` (`enabled`, `disabled`, …).
    pub unit_file_state: String,
    /// `ActiveState`.
    pub active_state: String,
    /// The next elapse, µs since the epoch (0 = none scheduled).
    pub next_elapse_us: u64,
}

/// Reads a timer's facts from systemd on `conn`.
pub async fn timer_facts(conn: &zbus::Connection, timer: &str) -> Result<TimerFacts> {
    let manager = timed("connecting", ManagerProxy::new(conn)).await?;
    let path = timed(&format!("LoadUnit({timer})"), manager.load_unit(timer)).await?;
    let bad_path = |e: zbus::Error| Error::UnitFailed(format!("systemd: unit path: {e}"));
    let u = timed(
        "unit",
        UnitProxy::builder(conn)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .path(path.clone())
            .map_err(bad_path)?
            .build(),
    )
    .await?;
    let load_state = timed("LoadState", u.load_state()).await?;
    if load_state != "loaded" {
        return Ok(TimerFacts {
            load_state,
            ..TimerFacts::default()
        });
    }
    let t = timed(
        "timer",
        TimerProxy::builder(conn)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .path(path)
            .map_err(bad_path)?
            .build(),
    )
    .await?;
    Ok(TimerFacts {
        load_state,
        unit_file_state: timed("UnitFileState", u.unit_file_state()).await?,
        active_state: timed("ActiveState", u.active_state()).await?,
        next_elapse_us: timed("NextElapseUSecRealtime", t.next_elapse_usec_realtime()).await?,
    })
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Service",
    default_service = "org.freedesktop.systemd1"
)]
trait Service {
    #[zbus(property)]
    fn exec_start(&self) -> zbus::Result<Vec<ExecCommand>>;
    #[zbus(property)]
    fn user(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn group(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn environment(&self) -> zbus::Result<Vec<String>>;
    #[zbus(property)]
    fn ambient_capabilities(&self) -> zbus::Result<u64>;
    #[zbus(property, name = "MainPID")]
    fn main_pid(&self) -> zbus::Result<u32>;
    #[zbus(property, name = "NRestarts")]
    fn n_restarts(&self) -> zbus::Result<u32>;
}

/// What the daemon needs to know about the managed unit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UnitFacts {
    /// The unit's name.
    pub name: String,
    /// `ExecStart` path.
    pub exec_path: Option<PathBuf>,
    /// `ExecStart` arguments (argv without argv\[0\]).
    pub exec_args: Vec<String>,
    /// `User=`; empty = root.
    pub user: String,
    /// `Group=`.
    pub group: String,
    /// `Environment=` entries.
    pub environment: Vec<String>,
    /// `AmbientCapabilities=` bit mask.
    pub ambient_capabilities: u64,
    /// Drop-in files in force.
    pub drop_in_paths: Vec<String>,
    /// `ActiveState`.
    pub active_state: String,
    /// `SubState`.
    pub sub_state: String,
    /// `MainPID`.
    pub main_pid: u32,
    /// `NRestarts`.
    pub n_restarts: u32,
    /// `AssertFileIsExecutable=` paths.
    pub assert_executable: Vec<String>,
}

impl UnitFacts {
    /// `CELLS_WORKING_DIR` from the unit's environment.
    pub fn working_dir(&self) -> Option<PathBuf> {
        self.environment
            .iter()
            .find_map(|e| e.strip_prefix("CELLS_WORKING_DIR="))
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    }
}

async fn timed<T>(what: &str, f: impl std::future::Future<Output = zbus::Result<T>>) -> Result<T> {
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Error::UnitFailed(format!("systemd: {what}: {e}"))),
        Err(_) => Err(Error::UnitFailed(format!(
            "systemd did not answer {what} within {} s",
            CALL_TIMEOUT.as_secs()
        ))),
    }
}

/// Reads the unit's facts from systemd on `conn` (the system bus).
pub async fn unit_facts(conn: &zbus::Connection, unit: &str) -> Result<UnitFacts> {
    let manager = timed("connecting", ManagerProxy::new(conn)).await?;
    let path = timed(&format!("LoadUnit({unit})"), manager.load_unit(unit)).await?;
    let bad_path = |e: zbus::Error| Error::UnitFailed(format!("systemd: unit path: {e}"));
    let u = timed(
        "unit",
        UnitProxy::builder(conn)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .path(path.clone())
            .map_err(bad_path)?
            .build(),
    )
    .await?;
    let s = timed(
        "service",
        ServiceProxy::builder(conn)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .path(path)
            .map_err(bad_path)?
            .build(),
    )
    .await?;
    let load = timed("LoadState", u.load_state()).await?;
    if load != "loaded" {
        return Err(Error::UnitFailed(format!(
            "the unit {unit} is {load} in systemd; set [cells] unit to the Cells service"
        )));
    }
    let exec = timed("ExecStart", s.exec_start()).await?;
    let first = exec.into_iter().next();
    Ok(UnitFacts {
        name: unit.to_string(),
        exec_path: first.as_ref().map(|e| PathBuf::from(&e.0)),
        exec_args: first
            .map(|e| e.1.into_iter().skip(1).collect())
            .unwrap_or_default(),
        user: timed("User", s.user()).await?,
        group: timed("Group", s.group()).await?,
        environment: timed("Environment", s.environment()).await?,
        ambient_capabilities: timed("AmbientCapabilities", s.ambient_capabilities()).await?,
        drop_in_paths: timed("DropInPaths", u.drop_in_paths()).await?,
        active_state: timed("ActiveState", u.active_state()).await?,
        sub_state: timed("SubState", u.sub_state()).await?,
        main_pid: timed("MainPID", s.main_pid()).await?,
        n_restarts: timed("NRestarts", s.n_restarts()).await?,
        assert_executable: timed("Asserts", u.asserts())
            .await?
            .into_iter()
            .filter(|a| a.0 == "AssertFileIsExecutable")
            .map(|a| a.3)
            .collect(),
    })
}

/// Asks systemd to reload its unit files.
pub async fn reload(conn: &zbus::Connection) -> Result<()> {
    let m = timed("connecting", ManagerProxy::new(conn)).await?;
    timed("Reload", m.reload()).await
}

/// Restarts (or, with `start_only`, starts) `unit` through the manager API and waits for
/// that job's `JobRemoved`; an error unless the job's result is `done`.
pub async fn restart(
    conn: &zbus::Connection,
    unit: &str,
    start_only: bool,
    timeout: Duration,
) -> Result<()> {
    use futures_util::StreamExt;
    let m = timed("connecting", ManagerProxy::new(conn)).await?;
    // Subscribing makes systemd send job signals; a second subscription is harmless.
    let _ = timed("Subscribe", m.subscribe()).await;
    let mut removed = timed("JobRemoved", m.receive_job_removed()).await?;
    // A deliberate restart, as an admin would do it: clear the failed state and the start
    // rate counter first. A release that crash-looped has used up the start budget (5 in
    // 10 s by default), and the rollback's restart must not be refused for it.
    let _ = timed(
        &format!("ResetFailedUnit({unit})"),
        m.reset_failed_unit(unit),
    )
    .await;
    let job = if start_only {
        timed(&format!("StartUnit({unit})"), m.start_unit(unit, "replace")).await?
    } else {
        timed(
            &format!("RestartUnit({unit})"),
            m.restart_unit(unit, "replace"),
        )
        .await?
    };
    let wait = async {
        while let Some(sig) = removed.next().await {
            if let Ok(args) = sig.args() {
                if args.job == job {
                    return Some(args.result.clone());
                }
            }
        }
        None
    };
    match tokio::time::timeout(timeout, wait).await {
        Ok(Some(r)) if r == "done" => Ok(()),
        Ok(Some(r)) => Err(Error::UnitFailed(format!(
            "systemd's job restarting {unit} ended with '{r}'"
        ))),
        Ok(None) => Err(Error::UnitFailed("lost the connection to systemd".into())),
        Err(_) => Err(Error::UnitFailed(format!(
            "systemd did not finish restarting {unit} within {} s",
            timeout.as_secs()
        ))),
    }
}

/// The fixed properties of a helper's transient unit (see [`crate::helper`]).
pub struct TransientProps<'a> {
    /// `Description=`.
    pub description: String,
    /// `ExecStart=` argv (the first word is the executable).
    pub argv: Vec<String>,
    /// Who it runs as.
    pub rights: crate::helper::Rights,
    /// Its standard input and output.
    pub stdin: std::os::fd::BorrowedFd<'a>,
    pub stdout: std::os::fd::BorrowedFd<'a>,
    /// `RuntimeMaxSec=`.
    pub runtime_max: Duration,
    /// `MemoryMax=`.
    pub memory_max: u64,
    /// `Environment=`.
    pub env: Vec<String>,
}

/// `IPAddressDeny=` entries: IPv4 and IPv6 link-local and multicast.
fn link_local_and_multicast() -> Vec<IpPrefix> {
    let v6 = |first: u8, second: u8| {
        let mut a = vec![0u8; 16];
        a[0] = first;
        a[1] = second;
        a
    };
    vec![
        (libc::AF_INET, vec![169, 254, 0, 0], 16),
        (libc::AF_INET, vec![224, 0, 0, 0], 4),
        (libc::AF_INET6, v6(0xfe, 0x80), 10),
        (libc::AF_INET6, v6(0xff, 0x00), 8),
    ]
}

type IpPrefix = (i32, Vec<u8>, u32);

/// `/etc/resolv.conf`, or nothing.
fn resolv_conf() -> String {
    std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()
}

/// The `hosts:` line of `/etc/nsswitch.conf` (`""` when there is none).
fn nss_hosts_line() -> String {
    std::fs::read_to_string("/etc/nsswitch.conf")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("hosts:").map(str::to_string))
        .unwrap_or_default()
}

/// The socket families a network helper may create: `AF_INET` and `AF_INET6` for HTTP(S) and
/// DNS; `AF_UNIX` only when name resolution here goes through a service reached over a local
/// socket (an NSS module other than `files`, `dns` and `myhostname` in the `hosts:` line:
/// `resolve` talks to systemd-resolved over varlink, `mymachines` to machined). Netlink,
/// packet and every other family are never needed.
fn helper_address_families(hosts_line: &str) -> Vec<String> {
    let mut families = vec!["AF_INET".to_string(), "AF_INET6".to_string()];
    let local_service = hosts_line
        .split_whitespace()
        .filter(|w| !w.starts_with('['))
        .any(|m| !matches!(m, "files" | "dns" | "myhostname"));
    if local_service {
        families.push("AF_UNIX".to_string());
    }
    families
}

/// A network helper's IP filter: (`IPAddressDeny=`, `IPAddressAllow=`). Link-local and
/// multicast are always denied; without `loopback`, loopback and unspecified addresses too,
/// except the name servers `resolv_conf` lists on loopback (systemd-resolved's 127.0.0.53,
/// a local dnsmasq): a helper that is made to misbehave cannot reach this host's services.
fn network_filter(loopback: bool, resolv_conf: &str) -> (Vec<IpPrefix>, Vec<IpPrefix>) {
    let mut deny = link_local_and_multicast();
    let mut allow = Vec::new();
    if !loopback {
        let mut v6_loopback = vec![0u8; 16];
        v6_loopback[15] = 1;
        deny.extend([
            (libc::AF_INET, vec![127, 0, 0, 0], 8),
            (libc::AF_INET, vec![0, 0, 0, 0], 8),
            (libc::AF_INET6, v6_loopback, 128),
            (libc::AF_INET6, vec![0u8; 16], 128),
        ]);
        for line in resolv_conf.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("nameserver") {
                continue;
            }
            match words
                .next()
                .and_then(|w| w.parse::<std::net::IpAddr>().ok())
            {
                Some(std::net::IpAddr::V4(v)) if v.is_loopback() => {
                    allow.push((libc::AF_INET, v.octets().to_vec(), 32))
                }
                Some(std::net::IpAddr::V6(v)) if v.is_loopback() => {
                    allow.push((libc::AF_INET6, v.octets().to_vec(), 128))
                }
                _ => {}
            }
        }
    }
    (deny, allow)
}

/// Starts a helper as a transient service with fixed properties and waits for systemd's
/// start job. Nothing in the properties comes from a caller or the update server: the argv is
/// this program and a fixed subcommand; requests travel through standard input.
pub async fn start_transient(
    conn: &zbus::Connection,
    name: &str,
    p: &TransientProps<'_>,
) -> Result<()> {
    use crate::helper::Rights;
    use futures_util::StreamExt;
    use zbus::zvariant::{Fd, Value};
    let fail = |e: String| Error::InvalidArgument(format!("cannot start the helper {name}: {e}"));
    let exec: Vec<(String, Vec<String>, bool)> = vec![(p.argv[0].clone(), p.argv.clone(), false)];
    let mut props: Vec<(&str, Value<'_>)> = vec![
        ("Description", Value::from(p.description.clone())),
        ("Type", Value::from("exec")),
        ("ExecStart", Value::from(exec)),
        (
            "StandardInputFileDescriptor",
            Value::from(Fd::from(p.stdin)),
        ),
        (
            "StandardOutputFileDescriptor",
            Value::from(Fd::from(p.stdout)),
        ),
        // A panic or other stray text goes to the journal, never into the framed pipe.
        ("StandardError", Value::from("journal")),
        ("SyslogIdentifier", Value::from("cells-updater")),
        ("Environment", Value::from(p.env.clone())),
        ("CollectMode", Value::from("inactive-or-failed")),
        (
            "RuntimeMaxUSec",
            Value::from(p.runtime_max.as_micros() as u64),
        ),
        ("MemoryMax", Value::from(p.memory_max)),
        ("NoNewPrivileges", Value::from(true)),
        ("CapabilityBoundingSet", Value::from(0u64)),
        ("AmbientCapabilities", Value::from(0u64)),
        ("ProtectSystem", Value::from("strict")),
        ("PrivateTmp", Value::from(true)),
        ("PrivateDevices", Value::from(true)),
        ("ProtectKernelTunables", Value::from(true)),
        ("ProtectKernelModules", Value::from(true)),
        ("ProtectKernelLogs", Value::from(true)),
        ("ProtectControlGroups", Value::from(true)),
        ("ProtectClock", Value::from(true)),
        ("ProtectHostname", Value::from(true)),
        ("RestrictSUIDSGID", Value::from(true)),
        ("RestrictRealtime", Value::from(true)),
        ("LockPersonality", Value::from(true)),
        // No namespace of any kind (the mask of the allowed ones is empty), no IPC with the
        // host, native system calls only.
        ("RestrictNamespaces", Value::from(0u64)),
        ("PrivateIPC", Value::from(true)),
        (
            "SystemCallArchitectures",
            Value::from(vec!["native".to_string()]),
        ),
        ("KillMode", Value::from("control-group")),
    ];
    match &p.rights {
        Rights::Sandbox => {
            props.push(("DynamicUser", Value::from(true)));
            props.push(("PrivateNetwork", Value::from(true)));
            props.push(("ProtectHome", Value::from("yes")));
        }
        Rights::Network { loopback } => {
            props.push(("DynamicUser", Value::from(true)));
            props.push(("ProtectHome", Value::from("yes")));
            // resolv.conf matters only when loopback is filtered.
            let resolv = if *loopback {
                String::new()
            } else {
                resolv_conf()
            };
            let (deny, allow) = network_filter(*loopback, &resolv);
            props.push(("IPAddressDeny", Value::from(deny)));
            let families = helper_address_families(&nss_hosts_line());
            props.push((
                "RestrictAddressFamilies",
                Value::from(zbus::zvariant::Structure::from((true, families))),
            ));
            if !allow.is_empty() {
                props.push(("IPAddressAllow", Value::from(allow)));
            }
        }
        Rights::CellsUser { user, group, rw } => {
            props.push(("User", Value::from(user.clone())));
            if !group.is_empty() {
                props.push(("Group", Value::from(group.clone())));
            }
            props.push(("PrivateNetwork", Value::from(true)));
            props.push(("ProtectHome", Value::from("read-only")));
            if let Some(dir) = rw {
                props.push((
                    "ReadWritePaths",
                    Value::from(vec![dir.display().to_string()]),
                ));
            }
        }
    }
    let m = timed("connecting", ManagerProxy::new(conn)).await?;
    let _ = timed("Subscribe", m.subscribe()).await;
    let mut removed = timed("JobRemoved", m.receive_job_removed()).await?;
    let job = timed(
        &format!("StartTransientUnit({name})"),
        m.start_transient_unit(name, "fail", &props, &[]),
    )
    .await?;
    let wait = async {
        while let Some(sig) = removed.next().await {
            if let Ok(args) = sig.args() {
                if args.job == job {
                    return Some(args.result.clone());
                }
            }
        }
        None
    };
    match tokio::time::timeout(CALL_TIMEOUT, wait).await {
        Ok(Some(r)) if r == "done" => Ok(()),
        Ok(Some(r)) => Err(fail(format!(
            "systemd's start job ended with '{r}' (see journalctl -u {name})"
        ))),
        Ok(None) => Err(fail("lost the connection to systemd".into())),
        Err(_) => Err(fail(format!(
            "systemd did not start it within {} s",
            CALL_TIMEOUT.as_secs()
        ))),
    }
}

/// Stops a helper unit (a finished one is already gone: errors are ignored).
pub async fn stop_transient(conn: &zbus::Connection, name: &str) {
    if let Ok(m) = ManagerProxy::new(conn).await {
        let _ = tokio::time::timeout(CALL_TIMEOUT, m.stop_unit(name, "replace")).await;
    }
}

/// What "healthy" means after a restart.
#[derive(Debug, Clone)]
pub struct HealthCheck {
    /// How long `MainPID` and `NRestarts` must stay unchanged.
    pub settle: Duration,
    /// Longest wait for all of it.
    pub timeout: Duration,
    /// Optional HTTP URL that must answer 2xx.
    pub url: Option<String>,
}

/// Asks the health URL through the network helper; `Ok` on a 2xx answer.
async fn http_healthy(
    runner: &crate::helper::Runner,
    url: &str,
) -> std::result::Result<(), String> {
    use crate::helper::{Input, Rights, Task};
    let req = crate::net::HttpGet {
        url: url.to_string(),
        timeout_secs: 5,
    };
    let task = Task {
        command: "http-get",
        args: Vec::new(),
        // The health URL is Cells on this host.
        rights: Rights::Network { loopback: true },
        input: Input::Json(serde_json::to_vec(&req).unwrap_or_default()),
        timeout: Duration::from_secs(15),
        env: Vec::new(),
    };
    match runner.run(task).await {
        Ok(v) => match v["status"].as_u64() {
            Some(s) if (200..300).contains(&s) => Ok(()),
            Some(s) => Err(format!("{url} answered HTTP {s}")),
            None => Err(format!("{url}: no status")),
        },
        Err(e) => Err(e.message()),
    }
}

/// Waits until `unit` is active with `MainPID` and `NRestarts` unchanged for the settle time
/// (and, when configured, the HTTP probe answers). A restart counted after `baseline`
/// restarts, or a failed unit, ends the wait at once.
pub async fn wait_healthy(
    conn: &zbus::Connection,
    unit: &str,
    check: &HealthCheck,
    baseline_restarts: u32,
    runner: &crate::helper::Runner,
) -> Result<UnitFacts> {
    let started = tokio::time::Instant::now();
    let mut stable: Option<(tokio::time::Instant, u32, u32)> = None;
    let mut last: String;
    loop {
        let facts = unit_facts(conn, unit).await?;
        last = format!(
            "{}/{}, {} restarts",
            facts.active_state, facts.sub_state, facts.n_restarts
        );
        if facts.n_restarts > baseline_restarts || facts.active_state == "failed" {
            return Err(Error::UnitFailed(format!(
                "{unit} did not stay up after the restart ({last}); see journalctl -u {unit}"
            )));
        }
        if facts.active_state == "active" && facts.main_pid != 0 {
            match stable {
                Some((since, pid, n)) if pid == facts.main_pid && n == facts.n_restarts => {
                    if since.elapsed() >= check.settle {
                        match &check.url {
                            None => return Ok(facts),
                            Some(url) => match http_healthy(runner, url).await {
                                Ok(()) => return Ok(facts),
                                Err(e) => last = format!("{last}; {e}"),
                            },
                        }
                    }
                }
                _ => {
                    stable = Some((
                        tokio::time::Instant::now(),
                        facts.main_pid,
                        facts.n_restarts,
                    ))
                }
            }
        } else {
            stable = None;
        }
        if started.elapsed() >= check.timeout {
            return Err(Error::UnitFailed(format!(
                "{unit} was not healthy within {} s ({last}); see journalctl -u {unit}",
                check.timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The drop-in cells-updater owns for `unit`.
pub fn dropin_path(unit: &str) -> PathBuf {
    PathBuf::from(format!(
        "/etc/systemd/system/{unit}.d/50-cells-updater.conf"
    ))
}

/// Quotes one ExecStart word the way systemd parses it: specifiers (`%`) and variables
/// (`$`) doubled, and in double quotes, backslash, quote and control characters C-escaped,
/// so the word can neither split, expand nor end the line.
fn quote_word(w: &str) -> String {
    if !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-=:,+@".contains(c))
    {
        return w.to_string();
    }
    let mut out = String::from("\"");
    for c in w.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\x{b:02x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// True for an absolute path to a file, written the one way systemd keeps it and within its
/// limits: at least one component, none empty, `.` or `..` (systemd simplifies `a//b` and
/// `a/./b` when it loads a path, so another spelling would read back as another string),
/// no trailing slash, components of at most 255 bytes and the whole under 4096 (beyond, systemd
/// drops the line as an invalid path), and no control character, DEL, quote or backslash
/// (systemd refuses such an executable name: "contains special characters").
pub fn is_plain_path(path: &str) -> bool {
    path.len() < 4096
        && path.starts_with('/')
        && !path
            .chars()
            .any(|c| c.is_control() || matches!(c, '"' | '\'' | '\\'))
        && path[1..]
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && c.len() <= 255)
}

/// The drop-in that points `unit` at `binary`, keeping the original arguments; with
/// `assert_executable`, `AssertFileIsExecutable=` is pointed there too.
pub fn render_dropin(
    unit: &str,
    binary: &Path,
    args: &[String],
    assert_executable: bool,
) -> Result<String> {
    let path = binary.display().to_string();
    if !is_plain_path(&path)
        || path.contains('\0')
        || args.iter().any(|a| a.contains('\0'))
        || unit.chars().any(|c| c.is_control())
    {
        return Err(Error::SwapFailed(format!(
            "cannot point {} at {:?}: a unit's command line holds no NUL and starts with a \
             plain absolute path (no //, . or ..)",
            crate::text::one_line(unit, 80),
            crate::text::one_line(&path, 200)
        )));
    }
    let mut out = format!(
        "# Managed by cells-updater: it points {unit} at the Cells binary it installed.\n\
         # cells-updater rewrites or removes this file; do not edit it.\n"
    );
    if assert_executable {
        // A condition's value is a plain path (specifiers expanded, no quoting), so it must
        // hold nothing a unit file reads otherwise: no control character, no backslash (a
        // line continuation at the end), no whitespace at the ends (trimmed).
        if path.chars().any(|c| c.is_control() || c == '\\') || path.trim() != path {
            return Err(Error::SwapFailed(format!(
                "cannot write AssertFileIsExecutable= for {:?}: rename the binary's directory",
                crate::text::one_line(&path, 200)
            )));
        }
        out.push_str(&format!(
            "\n[Unit]\nAssertFileIsExecutable=\nAssertFileIsExecutable={}\n",
            path.replace('%', "%%")
        ));
    }
    let mut line = quote_word(&binary.display().to_string());
    for a in args {
        line.push(' ');
        line.push_str(&quote_word(a));
    }
    out.push_str(&format!("\n[Service]\nExecStart=\nExecStart={line}\n"));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_helpers_get_inet_sockets_and_unix_only_for_a_resolver_service() {
        let inet = ["AF_INET", "AF_INET6"];
        assert_eq!(helper_address_families(" files dns"), inet);
        assert_eq!(helper_address_families("files myhostname dns"), inet);
        assert_eq!(helper_address_families(""), inet);
        assert_eq!(
            helper_address_families(" files resolve [!UNAVAIL=return] dns myhostname"),
            ["AF_INET", "AF_INET6", "AF_UNIX"]
        );
        assert_eq!(
            helper_address_families("files mymachines dns"),
            ["AF_INET", "AF_INET6", "AF_UNIX"]
        );
    }

    #[test]
    fn network_helpers_reach_loopback_only_when_needed() {
        let resolv = "# generated\nnameserver 127.0.0.53\nnameserver ::1\nnameserver 192.0.2.1\n\
                      options edns0\nnameserver not-an-ip\n";
        let has = |l: &[IpPrefix], family: i32, first: u8, len: u32| {
            l.iter()
                .any(|(f, a, n)| *f == family && a[0] == first && *n == len)
        };
        // A server on loopback: link-local and multicast only.
        let (deny, allow) = network_filter(true, resolv);
        assert_eq!(deny, link_local_and_multicast());
        assert!(allow.is_empty());
        // A remote server: loopback and unspecified denied too, the loopback name servers
        // allowed (exactly), a remote name server not listed.
        let (deny, allow) = network_filter(false, resolv);
        assert!(has(&deny, libc::AF_INET, 127, 8));
        assert!(has(&deny, libc::AF_INET, 0, 8));
        assert!(deny
            .iter()
            .any(|(f, a, n)| *f == libc::AF_INET6 && a[15] == 1 && *n == 128));
        assert!(has(&deny, libc::AF_INET, 169, 16));
        assert_eq!(
            allow,
            vec![
                (libc::AF_INET, vec![127, 0, 0, 53], 32),
                (
                    libc::AF_INET6,
                    {
                        let mut a = vec![0u8; 16];
                        a[15] = 1;
                        a
                    },
                    128
                ),
            ]
        );
        let (_, allow) = network_filter(false, "");
        assert!(allow.is_empty());
    }

    /// Golden file: the exact bytes of the drop-in for an Enterprise binary.
    #[test]
    fn dropin_golden() {
        let got = render_dropin(
            "cells.service",
            Path::new("/opt/pydio/bin/cells-enterprise"),
            &["start".to_string()],
            true,
        )
        .unwrap();
        assert_eq!(got, include_str!("../tests/golden/50-cells-updater.conf"));
    }

    #[test]
    fn a_path_systemd_would_respell_is_refused() {
        for p in [
            "/opt/pydio//bin/cells",
            "/opt/./cells",
            "/opt/../cells",
            "/opt/cells/",
            "cells",
        ] {
            assert!(!is_plain_path(p), "{p}");
            let e = render_dropin("cells.service", Path::new(p), &[], false).unwrap_err();
            assert!(e.message().contains("plain absolute path"), "{e}");
        }
        assert!(is_plain_path("/opt/pydio/bin/cells-enterprise"));
    }

    #[test]
    fn dropin_quotes_what_systemd_would_split_or_expand() {
        let got = render_dropin(
            "cells.service",
            Path::new("/opt/my cells/cells"),
            &[
                "--log=%h".into(),
                "a$b".into(),
                "".into(),
                "two\nlines\u{7f}".into(),
            ],
            false,
        )
        .unwrap();
        assert!(
            got.ends_with(
                "ExecStart=\"/opt/my cells/cells\" \"--log=%%h\" \"a$$b\" \"\" \"two\\nlines\\x7f\"\n"
            ),
            "{got}"
        );
        assert!(!got.contains("[Unit]"));
        assert!(render_dropin("cells.service", Path::new("/x\0"), &[], false).is_err());
        assert!(render_dropin("cells.service", Path::new("rel"), &[], false).is_err());
    }
}
