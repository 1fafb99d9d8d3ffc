//! A hostile D-Bus caller, for tests/hostile_callers.rs (private bus) and the real-systemd
//! rows: it makes one malformed call (a row) and prints what came back as one JSON line, or
//! fires a burst of mutating calls and counts the answers. It is also the load of the soak
//! (benches/soak.rs): many well-behaved clients at once.
//!
//!   hostile_client [--address ADDR] row NAME     -> {"row", "error", "message", "job_error"}
//!   hostile_client [--address ADDR] rows         -> the row names, one per line
//!   hostile_client [--address ADDR] burst N      -> {"answers": {error: count}, "seconds"}
//!   hostile_client [--address ADDR] role-rows    -> the roles table: "NAME ROLE" per line
//!   hostile_client [--address ADDR] role NAME [VERSION] -> {"row", "error", "message", "job"}
//!   hostile_client [--address ADDR] cancel JOB   -> {"row", "error", "message"}
//!   hostile_client [--address ADDR] soak CLIENTS SECONDS PAUSE_MS
//!       -> {"calls": {op: {answer: count}}, "late": n, "max_ms": {op: ms}}
//!
//! Without --address it uses the system bus. At most 100 calls are in flight at once
//! (dbus-daemon answers LimitsExceeded by itself above 128 per connection).

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};
use zbus::zvariant::{Fd, OwnedObjectPath, Value};

const DEST: &str = "com.pydio.CellsUpdater1";
const PATH: &str = "/com/pydio/CellsUpdater1";
const IFACE: &str = "com.pydio.CellsUpdater1.Manager";

type Dict<'a> = HashMap<&'a str, Value<'a>>;

const ROWS: &[&str] = &[
    "check_wrong_type",
    "check_unknown_key",
    "check_bad_package",
    "stage_traversal",
    "stage_slash",
    "stage_newline",
    "stage_nul",
    "stage_1mib",
    "stage_force_type",
    "apply_version_type",
    "apply_on_failure",
    "apply_unknown_key",
    "update_traversal",
    "update_empty_key",
    "rollback_unknown_key",
    "license_empty",
    "license_1mib",
    "license_control",
    "enterprise_empty",
    "hold_1mib",
    "hold_bad_pin",
    "fd_no_metadata",
    "fd_closed",
    "fd_directory",
    "fd_socket",
    "fd_pipe_never_ends",
    "fd_dev_zero",
    "fd_fifo",
    "fd_write_only",
    "fd_empty",
    "fd_growing",
];

/// The roles of docs/dbus-api.md ("Who may call what"), one well-formed call per row (for
/// tests/roles.rs): `cells` rows are the Cells application's (the unit's User= may), `admin`
/// rows a host admin's only. Job rows ask for VERSION (default 9.9.9, never offered, so the
/// job that an authorized call starts fails at once and changes nothing).
const ROLE_ROWS: &[(&str, &str)] = &[
    ("check", "cells"),
    ("stage", "cells"),
    ("stage_fd", "cells"),
    ("update", "cells"),
    ("update_defaults_spelt_out", "cells"),
    ("apply", "cells"),
    ("enterprise", "cells"),
    ("license", "cells"),
    ("hold", "admin"),
    ("release", "admin"),
    ("forget_bad", "admin"),
    ("stage_force", "admin"),
    ("update_force", "admin"),
    ("update_no_restart", "admin"),
    ("update_keep", "admin"),
    ("apply_no_restart", "admin"),
    ("apply_keep", "admin"),
    ("apply_force", "admin"),
    ("enterprise_no_restart", "admin"),
    ("rollback", "admin"),
];

async fn role_row(conn: &zbus::Connection, name: &str, version: &str) -> Outcome {
    let none = Dict::new();
    let force = || d(&[("Force", Value::from(true))]);
    let no_restart = || d(&[("Restart", Value::from(false))]);
    let keep = || d(&[("OnFailure", Value::from("keep"))]);
    match name {
        "check" => call(conn, "Check", &(&none,)).await,
        "stage" => call(conn, "Stage", &(version, &none)).await,
        "stage_fd" => {
            let p = temp("role-fd");
            std::fs::write(&p, vec![0x7f; 4096]).expect("write");
            let o = stage_fd(conn, std::fs::File::open(&p).expect("open")).await;
            let _ = std::fs::remove_file(&p);
            o
        }
        "update" => call(conn, "Update", &(version, &none)).await,
        "update_defaults_spelt_out" => {
            let o = d(&[
                ("Restart", Value::from(true)),
                ("OnFailure", Value::from("rollback")),
            ]);
            call(conn, "Update", &(version, o)).await
        }
        "apply" => call(conn, "Apply", &(&none,)).await,
        "enterprise" => call(conn, "UpgradeToEnterprise", &("ROLE-KEY", &none)).await,
        "license" => call(conn, "InstallLicense", &("ROLE-KEY",)).await,
        "hold" => call(conn, "Hold", &("held by the roles test", &none)).await,
        "release" => call(conn, "Release", &()).await,
        "forget_bad" => call(conn, "ForgetBadVersion", &(version,)).await,
        "stage_force" => call(conn, "Stage", &(version, force())).await,
        "update_force" => call(conn, "Update", &(version, force())).await,
        "update_no_restart" => call(conn, "Update", &(version, no_restart())).await,
        "update_keep" => call(conn, "Update", &(version, keep())).await,
        "apply_no_restart" => call(conn, "Apply", &(no_restart(),)).await,
        "apply_keep" => call(conn, "Apply", &(keep(),)).await,
        "apply_force" => call(conn, "Apply", &(force(),)).await,
        "enterprise_no_restart" => {
            call(conn, "UpgradeToEnterprise", &("ROLE-KEY", no_restart())).await
        }
        "rollback" => call(conn, "Rollback", &(&none,)).await,
        other => panic!("unknown role row {other}"),
    }
}

/// `Job.Cancel()` of `job`.
async fn cancel(conn: &zbus::Connection, job: &str) -> Outcome {
    outcome(
        conn.call_method(
            Some(DEST),
            job,
            Some("com.pydio.CellsUpdater1.Job"),
            "Cancel",
            &(),
        )
        .await,
    )
}

fn print_outcome(row: &str, o: &Outcome) {
    println!(
        "{}",
        serde_json::json!({
            "row": row,
            "error": o.error,
            "message": o.message.chars().take(300).collect::<String>(),
            "message_len": o.message.len(),
            "job": o.job.as_ref().map(|j| j.to_string()),
        })
    );
}

fn d<'a>(entries: &[(&'a str, Value<'a>)]) -> Dict<'a> {
    entries
        .iter()
        .map(|(k, v)| (*k, v.try_clone().expect("plain values")))
        .collect()
}

fn meta() -> Dict<'static> {
    d(&[
        ("Version", Value::from("4.4.9")),
        (
            "Checksum",
            Value::from("iGrluT84EgM03isvBsGbeFNFyMGfMGkAePBLoB2GBrk="),
        ),
        ("Signature", Value::from("AAAA")),
    ])
}

/// The outcome of a call: the error's name and message, or the job it created.
struct Outcome {
    error: String,
    message: String,
    job: Option<OwnedObjectPath>,
}

async fn call<B>(conn: &zbus::Connection, method: &str, body: &B) -> Outcome
where
    B: serde::Serialize + zbus::zvariant::DynamicType,
{
    outcome(
        conn.call_method(Some(DEST), PATH, Some(IFACE), method, body)
            .await,
    )
}

/// A reply as an outcome: the job it names, or the error.
fn outcome(reply: zbus::Result<zbus::Message>) -> Outcome {
    match reply {
        Ok(reply) => Outcome {
            error: String::new(),
            message: String::new(),
            job: reply.body().deserialize::<OwnedObjectPath>().ok(),
        },
        Err(zbus::Error::MethodError(name, message, _)) => Outcome {
            error: name.to_string(),
            message: message.unwrap_or_default(),
            job: None,
        },
        Err(e) => Outcome {
            error: "client-side".into(),
            message: e.to_string(),
            job: None,
        },
    }
}

async fn stage_fd(conn: &zbus::Connection, fd: impl AsFd) -> Outcome {
    call(conn, "StageFromFd", &(Fd::from(fd.as_fd()), meta())).await
}

fn temp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("hostile-{}-{name}", std::process::id()))
}

async fn row(conn: &zbus::Connection, name: &str) -> Outcome {
    let mib = "9".repeat(1 << 20);
    let none = Dict::new();
    match name {
        "check_wrong_type" => call(conn, "Check", &(d(&[("Channel", Value::from(5i32))]),)).await,
        "check_unknown_key" => call(conn, "Check", &(d(&[("Bogus", Value::from(""))]),)).await,
        "check_bad_package" => {
            call(
                conn,
                "Check",
                &(d(&[("PackageName", Value::from("../Evil"))]),),
            )
            .await
        }
        "stage_traversal" => call(conn, "Stage", &("../../etc", &none)).await,
        "stage_slash" => call(conn, "Stage", &("4.4.5/../x", &none)).await,
        "stage_newline" => call(conn, "Stage", &("4.4.5\nSTATUS=pwned", &none)).await,
        "stage_nul" => call(conn, "Stage", &("4.4.5\0x", &none)).await,
        "stage_1mib" => call(conn, "Stage", &(mib.as_str(), &none)).await,
        "stage_force_type" => {
            call(
                conn,
                "Stage",
                &("4.4.5", d(&[("Force", Value::from("yes"))])),
            )
            .await
        }
        "apply_version_type" => call(conn, "Apply", &(d(&[("Version", Value::from(5u32))]),)).await,
        "apply_on_failure" => {
            call(
                conn,
                "Apply",
                &(d(&[("OnFailure", Value::from("explode"))]),),
            )
            .await
        }
        "apply_unknown_key" => {
            call(conn, "Apply", &(d(&[("Exec", Value::from("/bin/sh"))]),)).await
        }
        "update_traversal" => call(conn, "Update", &("../../etc", &none)).await,
        "update_empty_key" => call(conn, "Update", &("4.4.5", d(&[("", Value::from(""))]))).await,
        "rollback_unknown_key" => {
            call(
                conn,
                "Rollback",
                &(d(&[("Version", Value::from("4.4.2"))]),),
            )
            .await
        }
        "license_empty" => call(conn, "InstallLicense", &("",)).await,
        "license_1mib" => call(conn, "InstallLicense", &(mib.as_str(),)).await,
        "license_control" => call(conn, "InstallLicense", &("key\u{1b}[2J\u{7}",)).await,
        "enterprise_empty" => call(conn, "UpgradeToEnterprise", &("", &none)).await,
        "hold_1mib" => call(conn, "Hold", &(mib.as_str(), &none)).await,
        "hold_bad_pin" => call(conn, "Hold", &("x", d(&[("Version", Value::from("../x"))]))).await,
        "fd_no_metadata" => {
            let f = std::fs::File::open("/proc/self/exe").expect("self");
            call(conn, "StageFromFd", &(Fd::from(f.as_fd()), &none)).await
        }
        "fd_closed" => {
            // A descriptor number that was just closed: the kernel refuses to pass it, so the
            // call never leaves this process; the daemon must not notice anything.
            let f = std::fs::File::open("/").expect("/");
            let raw = std::os::fd::IntoRawFd::into_raw_fd(f);
            nix::unistd::close(raw).expect("close");
            // SAFETY: the number is closed on purpose; it is only handed to sendmsg(2), which
            // answers EBADF.
            let closed = unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) };
            stage_fd(conn, closed).await
        }
        "fd_directory" => stage_fd(conn, std::fs::File::open("/").expect("/")).await,
        "fd_socket" => {
            let (a, _b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
            stage_fd(conn, a).await
        }
        "fd_pipe_never_ends" => {
            // The write end stays open and silent for the whole call.
            let (r, _w): (OwnedFd, OwnedFd) = nix::unistd::pipe().expect("pipe");
            stage_fd(conn, r).await
        }
        "fd_dev_zero" => stage_fd(conn, std::fs::File::open("/dev/zero").expect("/dev/zero")).await,
        "fd_fifo" => {
            let p = temp("fifo");
            let _ = std::fs::remove_file(&p);
            nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600))
                .expect("mkfifo");
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&p)
                .expect("fifo");
            let o = stage_fd(conn, f).await;
            let _ = std::fs::remove_file(&p);
            o
        }
        "fd_write_only" => {
            let p = temp("wo");
            std::fs::write(&p, b"\x7fELF not really").expect("write");
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .expect("open");
            let o = stage_fd(conn, f).await;
            let _ = std::fs::remove_file(&p);
            o
        }
        "fd_empty" => {
            let p = temp("empty");
            std::fs::write(&p, b"").expect("write");
            let o = stage_fd(conn, std::fs::File::open(&p).expect("open")).await;
            let _ = std::fs::remove_file(&p);
            o
        }
        "fd_growing" => {
            // A file that keeps growing while the daemon reads it.
            let p = temp("growing");
            std::fs::write(&p, vec![0x7f; 64 << 10]).expect("write");
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let writer = {
                let (p, stop) = (p.clone(), stop.clone());
                std::thread::spawn(move || {
                    use std::io::Write;
                    let mut f = std::fs::OpenOptions::new()
                        .append(true)
                        .open(&p)
                        .expect("open");
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        if f.write_all(&[0x41; 64 << 10]).is_err() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(2));
                    }
                })
            };
            let o = stage_fd(conn, std::fs::File::open(&p).expect("open")).await;
            let o = match &o.job {
                Some(job) => finished(conn, job, o.job.clone()).await,
                None => o,
            };
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = writer.join();
            let _ = std::fs::remove_file(&p);
            o
        }
        other => Outcome {
            error: "unknown-row".into(),
            message: other.into(),
            job: None,
        },
    }
}

/// Waits (60 s at most) for a job to end; its error becomes the outcome's.
async fn finished(
    conn: &zbus::Connection,
    job: &OwnedObjectPath,
    keep: Option<OwnedObjectPath>,
) -> Outcome {
    let props = zbus::fdo::PropertiesProxy::builder(conn)
        .destination(DEST)
        .and_then(|b| b.path(job.clone()))
        .expect("names");
    let props = props.build().await.expect("proxy");
    let iface =
        zbus::names::InterfaceName::from_static_str_unchecked("com.pydio.CellsUpdater1.Job");
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(p) = props.get_all(iface.clone()).await {
            let s = |k: &str| {
                p.get(k)
                    .and_then(|v| String::try_from(v.try_clone().ok()?).ok())
                    .unwrap_or_default()
            };
            if s("State") != "running" {
                return Outcome {
                    error: s("Error"),
                    message: s("Message"),
                    job: keep,
                };
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Outcome {
        error: "timeout".into(),
        message: "the job did not end".into(),
        job: keep,
    }
}

async fn burst(conn: &zbus::Connection, n: usize) -> BTreeMap<String, usize> {
    use futures_util::stream::{self, StreamExt};
    let answers: Vec<String> = stream::iter(0..n)
        .map(|i| async move {
            let version = format!("4.4.{}", 100 + i);
            call(conn, "Stage", &(version.as_str(), Dict::new()))
                .await
                .error
        })
        .buffer_unordered(100)
        .collect()
        .await;
    let mut counts = BTreeMap::new();
    for a in answers {
        *counts
            .entry(if a.is_empty() { "ok".to_string() } else { a })
            .or_insert(0) += 1;
    }
    counts
}

/// One soak client: its own connection, a fixed mix of reads and checks until `until`, each
/// call with a deadline (a call that misses it counts as late: a deadlock or a stall).
async fn soak_client(
    builder: zbus::connection::Builder<'static>,
    id: usize,
    until: Instant,
    pause: Duration,
) -> (
    BTreeMap<String, BTreeMap<String, usize>>,
    BTreeMap<String, u128>,
) {
    let conn = builder.build().await.expect("connect");
    let mut calls: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let mut max_ms: BTreeMap<String, u128> = BTreeMap::new();
    let mut i = id;
    while Instant::now() < until {
        i += 1;
        let (op, deadline) = match i % 20 {
            0 => ("Check", Duration::from_secs(90)),
            1..=5 => ("ListJobs", Duration::from_secs(25)),
            6..=9 => ("Introspect", Duration::from_secs(25)),
            _ => ("GetAll", Duration::from_secs(25)),
        };
        let t0 = Instant::now();
        let fut = async {
            let r = match op {
                "Check" => {
                    conn.call_method(Some(DEST), PATH, Some(IFACE), "Check", &Dict::new())
                        .await
                }
                "ListJobs" => {
                    conn.call_method(Some(DEST), PATH, Some(IFACE), "ListJobs", &())
                        .await
                }
                "Introspect" => {
                    conn.call_method(
                        Some(DEST),
                        PATH,
                        Some("org.freedesktop.DBus.Introspectable"),
                        "Introspect",
                        &(),
                    )
                    .await
                }
                _ => {
                    conn.call_method(
                        Some(DEST),
                        PATH,
                        Some("org.freedesktop.DBus.Properties"),
                        "GetAll",
                        &(IFACE,),
                    )
                    .await
                }
            };
            match r {
                Ok(_) => "ok".to_string(),
                Err(zbus::Error::MethodError(name, _, _)) => name.to_string(),
                Err(e) => format!("transport: {e}"),
            }
        };
        let answer = tokio::time::timeout(deadline, fut)
            .await
            .unwrap_or_else(|_| "late".to_string());
        let ms = t0.elapsed().as_millis();
        let m = max_ms.entry(op.to_string()).or_insert(0);
        *m = (*m).max(ms);
        *calls
            .entry(op.to_string())
            .or_default()
            .entry(answer)
            .or_insert(0) += 1;
        tokio::time::sleep(pause).await;
    }
    (calls, max_ms)
}

async fn soak(
    address: Option<&str>,
    clients: usize,
    seconds: u64,
    pause: Duration,
) -> serde_json::Value {
    let until = Instant::now() + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..clients)
        .map(|id| {
            let builder = match address {
                Some(a) => zbus::connection::Builder::address(a).expect("address"),
                None => zbus::connection::Builder::system().expect("system bus"),
            };
            tokio::spawn(soak_client(builder, id, until, pause))
        })
        .collect();
    let mut calls: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let mut max_ms: BTreeMap<String, u128> = BTreeMap::new();
    for t in tasks {
        let (c, m) = t.await.expect("soak client");
        for (op, answers) in c {
            for (a, n) in answers {
                *calls.entry(op.clone()).or_default().entry(a).or_insert(0) += n;
            }
        }
        for (op, ms) in m {
            let e = max_ms.entry(op).or_insert(0);
            *e = (*e).max(ms);
        }
    }
    let late: usize = calls.values().filter_map(|a| a.get("late")).sum();
    serde_json::json!({"calls": calls, "late": late, "max_ms": max_ms})
}

/// A fake fleet agent: it grants every slot and takes every report (a local user posing as
/// the agent); `lossy`, it loses every grant before the confirm and prints each report.
struct FakeAgent {
    lossy: bool,
}

#[zbus::interface(name = "com.pydio.CellsUpdater1.Fleet")]
impl FakeAgent {
    fn take_slot(&self, _version: String) -> (bool, u32, i64, String) {
        (true, 0, 7, String::new())
    }
    fn confirm_slot(&self, _slot: u32, _grant: i64) -> zbus::fdo::Result<()> {
        if self.lossy {
            return Err(zbus::fdo::Error::Failed("lost".into()));
        }
        Ok(())
    }
    fn report(&self, version: String, slot: u32, grant: i64, bad: bool, _reason: String) {
        println!("report {version} {slot} {grant} {bad}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
    }
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let address = if args.first().map(String::as_str) == Some("--address") {
        args.remove(0);
        Some(args.remove(0))
    } else {
        None
    };
    // The tables need no bus.
    if args.first().map(String::as_str) == Some("role-rows") {
        ROLE_ROWS.iter().for_each(|(r, who)| println!("{r} {who}"));
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let builder = match &address {
            Some(a) => zbus::connection::Builder::address(a.as_str()).expect("address"),
            None => zbus::connection::Builder::system().expect("system bus"),
        };
        if args.first().map(String::as_str) == Some("fake-agent") {
            let _conn = builder
                .serve_at(
                    "/com/pydio/CellsUpdater1/Fleet",
                    FakeAgent {
                        lossy: args.get(1).map(String::as_str) == Some("lossy"),
                    },
                )
                .expect("serve")
                .name("com.pydio.CellsUpdater1.Fleet")
                .expect("name")
                .build()
                .await
                .expect("own the agent's name");
            println!("owned");
            return std::future::pending::<()>().await;
        }
        let conn = builder
            .method_timeout(Duration::from_secs(60))
            .build()
            .await
            .expect("connect");
        match args.first().map(String::as_str) {
            Some("rows") => ROWS.iter().for_each(|r| println!("{r}")),
            Some("role") => {
                let name = args.get(1).expect("role NAME [VERSION]");
                let version = args.get(2).map_or("9.9.9", String::as_str);
                print_outcome(name, &role_row(&conn, name, version).await);
            }
            Some("cancel") => {
                let job = args.get(1).expect("cancel JOB");
                print_outcome("cancel", &cancel(&conn, job).await);
            }
            Some("row") => {
                let name = args.get(1).expect("row NAME");
                let o = row(&conn, name).await;
                println!(
                    "{}",
                    serde_json::json!({
                        "row": name,
                        "error": o.error,
                        "message": o.message.chars().take(300).collect::<String>(),
                        "message_len": o.message.len(),
                        "job": o.job.map(|j| j.to_string()),
                    })
                );
            }
            Some("burst") => {
                let n: usize = args.get(1).and_then(|n| n.parse().ok()).expect("burst N");
                let t0 = Instant::now();
                let counts = burst(&conn, n).await;
                println!(
                    "{}",
                    serde_json::json!({"answers": counts, "seconds": t0.elapsed().as_secs_f64()})
                );
            }
            Some("soak") => {
                let n = |i: usize| -> u64 {
                    args.get(i)
                        .and_then(|n| n.parse().ok())
                        .expect("soak CLIENTS SECONDS PAUSE_MS")
                };
                let report = soak(
                    address.as_deref(),
                    n(1) as usize,
                    n(2),
                    Duration::from_millis(n(3)),
                )
                .await;
                println!("{report}");
            }
            _ => {
                eprintln!(
                    "usage: hostile_client [--address ADDR] rows | row NAME | burst N | \
                     soak CLIENTS SECONDS PAUSE_MS | role-rows | role NAME [VERSION] | cancel JOB"
                );
                std::process::exit(2);
            }
        }
    });
}
