//! Client commands: talk to the daemon over D-Bus, follow jobs through `PropertiesChanged`
//! and `JobFinished`, print for a person or (`--json`) for a script.

use super::{EXIT_FAILED, EXIT_UNREACHABLE};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;
use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};

/// Longest silence from a followed job before the client gives up waiting (the job goes on).
const FOLLOW_SILENCE: Duration = Duration::from_secs(600);
/// Format version of `--json` documents.
const JSON_FORMAT: u32 = 1;

#[zbus::proxy(
    interface = "com.pydio.CellsUpdater1.Manager",
    default_service = "com.pydio.CellsUpdater1",
    default_path = "/com/pydio/CellsUpdater1"
)]
pub trait Manager {
    fn check(
        &self,
        options: HashMap<&str, Value<'_>>,
    ) -> zbus::Result<Vec<HashMap<String, OwnedValue>>>;
    fn stage(
        &self,
        version: &str,
        options: HashMap<&str, Value<'_>>,
    ) -> zbus::Result<OwnedObjectPath>;
    fn stage_from_fd(
        &self,
        binary: zbus::zvariant::Fd<'_>,
        metadata: HashMap<&str, Value<'_>>,
    ) -> zbus::Result<OwnedObjectPath>;
    fn apply(&self, options: HashMap<&str, Value<'_>>) -> zbus::Result<OwnedObjectPath>;
    fn update(
        &self,
        version: &str,
        options: HashMap<&str, Value<'_>>,
    ) -> zbus::Result<OwnedObjectPath>;
    fn rollback(&self, options: HashMap<&str, Value<'_>>) -> zbus::Result<OwnedObjectPath>;
    fn install_license(&self, key: &str) -> zbus::Result<()>;
    fn hold(&self, reason: &str, options: HashMap<&str, Value<'_>>) -> zbus::Result<()>;
    fn release(&self) -> zbus::Result<()>;
    fn forget_bad_version(&self, entry: &str) -> zbus::Result<()>;
    fn upgrade_to_enterprise(
        &self,
        license: &str,
        options: HashMap<&str, Value<'_>>,
    ) -> zbus::Result<OwnedObjectPath>;
    #[zbus(signal)]
    fn job_finished(
        &self,
        job: OwnedObjectPath,
        state: String,
        error: String,
        message: String,
    ) -> zbus::Result<()>;
}

/// A failed client command: what to print and the exit status.
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl From<zbus::Error> for Failure {
    fn from(e: zbus::Error) -> Self {
        match &e {
            zbus::Error::MethodError(name, msg, _) => {
                let name = name.as_str();
                let unreachable = matches!(
                    name,
                    "org.freedesktop.DBus.Error.ServiceUnknown"
                        | "org.freedesktop.DBus.Error.NameHasNoOwner"
                        | "org.freedesktop.DBus.Error.Spawn.ChildExited"
                        | "org.freedesktop.DBus.Error.Spawn.Failed"
                        | "org.freedesktop.DBus.Error.TimedOut"
                        | "org.freedesktop.DBus.Error.NoReply"
                );
                Failure {
                    code: if unreachable {
                        EXIT_UNREACHABLE
                    } else {
                        EXIT_FAILED
                    },
                    message: format!("{name}: {}", msg.as_deref().unwrap_or("")),
                }
            }
            zbus::Error::FDO(f) => Failure {
                code: match **f {
                    zbus::fdo::Error::ServiceUnknown(_) | zbus::fdo::Error::NameHasNoOwner(_) => {
                        EXIT_UNREACHABLE
                    }
                    _ => EXIT_FAILED,
                },
                message: f.to_string(),
            },
            zbus::Error::InputOutput(_) | zbus::Error::Address(_) | zbus::Error::Handshake(_) => {
                Failure {
                    code: EXIT_UNREACHABLE,
                    message: format!("cannot reach the bus: {e}"),
                }
            }
            _ => Failure {
                code: EXIT_FAILED,
                message: e.to_string(),
            },
        }
    }
}

impl Failure {
    fn usage(message: String) -> Self {
        Failure {
            code: super::EXIT_USAGE,
            message,
        }
    }
    pub(super) fn failed(message: String) -> Self {
        Failure {
            code: EXIT_FAILED,
            message,
        }
    }
}

/// Prints a failure and turns it into the exit status.
pub fn exit(result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            // The message may carry the update server's or a binary's words (I10).
            eprintln!(
                "cells-updater: {}",
                cells_updater::text::multi_line(&f.message)
            );
            ExitCode::from(f.code)
        }
    }
}

/// Longest wait for one method call: polkit may wait 5 min for an admin's password, and a
/// check for the update server up to `[server] timeout`.
const METHOD_TIMEOUT: Duration = Duration::from_secs(420);

/// Connects to the daemon's bus: `address`, else the system bus. Every call has a timeout.
pub async fn connect(address: Option<&str>) -> Result<zbus::Connection, Failure> {
    let builder = match address {
        Some(a) => zbus::connection::Builder::address(a)?,
        None => zbus::connection::Builder::system()?,
    };
    let conn = builder.method_timeout(METHOD_TIMEOUT).build().await;
    conn.map_err(|e| Failure {
        code: EXIT_UNREACHABLE,
        message: format!("cannot connect to the bus: {e}"),
    })
}

fn value_to_json(v: &Value<'_>) -> serde_json::Value {
    match v {
        Value::Str(s) => serde_json::Value::from(s.as_str()),
        Value::ObjectPath(p) => serde_json::Value::from(p.as_str()),
        Value::Bool(b) => serde_json::Value::from(*b),
        Value::U8(n) => serde_json::Value::from(*n),
        Value::U32(n) => serde_json::Value::from(*n),
        Value::I32(n) => serde_json::Value::from(*n),
        Value::U64(n) => serde_json::Value::from(*n),
        Value::I64(n) => serde_json::Value::from(*n),
        Value::Array(a) => serde_json::Value::Array(a.iter().map(value_to_json).collect()),
        Value::Value(inner) => value_to_json(inner),
        other => serde_json::Value::from(format!("{other:?}")),
    }
}

fn props_to_json(
    props: &HashMap<String, OwnedValue>,
) -> serde_json::Map<String, serde_json::Value> {
    props
        .iter()
        .map(|(k, v)| (k.clone(), value_to_json(v)))
        .collect()
}

/// `YYYY-MM-DD HH:MM:SS UTC` for µs since the epoch.
fn format_time(us: u64) -> String {
    cells_updater::schedule::format_us(us)
}

fn get_str(p: &HashMap<String, OwnedValue>, k: &str) -> String {
    p.get(k)
        .and_then(|v| String::try_from(v.try_clone().ok()?).ok())
        .unwrap_or_default()
}

fn or_dash(s: String) -> String {
    if s.is_empty() || s == "/" {
        "-".into()
    } else {
        s
    }
}

/// `status [--json]`.
pub async fn status(conn: &zbus::Connection, json: bool) -> Result<(), Failure> {
    let props = zbus::fdo::PropertiesProxy::builder(conn)
        .destination(cells_updater::contract::BUS_NAME)?
        .path(cells_updater::contract::MANAGER_PATH)?
        .build()
        .await?;
    let iface = zbus::names::InterfaceName::from_static_str_unchecked(
        cells_updater::contract::MANAGER_INTERFACE,
    );
    let all = props.get_all(iface).await.map_err(zbus::Error::from)?;
    if json {
        let mut doc = props_to_json(&all);
        doc.insert("format".into(), JSON_FORMAT.into());
        println!(
            "{}",
            cells_updater::text::json(&serde_json::Value::Object(doc))
        );
        return Ok(());
    }
    let strings = |name: &str| -> Vec<String> {
        all.get(name)
            .and_then(|v| Vec::<String>::try_from(v.try_clone().ok()?).ok())
            .unwrap_or_default()
    };
    let avail = strings("AvailableVersions");
    let bad: Vec<String> = strings("BadVersions")
        .iter()
        .map(|b| cells_updater::text::one_line(b, 80))
        .collect();
    let last_check = all
        .get("LastCheck")
        .and_then(|v| u64::try_from(v).ok())
        .unwrap_or(0);
    let rows = [
        ("State", get_str(&all, "State")),
        (
            "Installed version",
            format!(
                "{} ({}, {})",
                or_dash(get_str(&all, "InstalledVersion")),
                get_str(&all, "PackageName"),
                get_str(&all, "Channel")
            ),
        ),
        (
            "Unit",
            format!(
                "{} -> {}",
                get_str(&all, "Unit"),
                or_dash(get_str(&all, "BinaryPath"))
            ),
        ),
        ("Staged version", or_dash(get_str(&all, "StagedVersion"))),
        (
            "Previous version",
            or_dash(get_str(&all, "PreviousVersion")),
        ),
        ("Available", or_dash(avail.join(", "))),
        ("Marked bad", or_dash(bad.join(", "))),
        ("Last check", format_time(last_check)),
        (
            "Hold",
            match (get_str(&all, "Hold"), get_str(&all, "HoldVersion")) {
                (h, _) if h.is_empty() => "-".to_string(),
                (h, v) if v.is_empty() => cells_updater::text::one_line(&h, 120),
                (h, v) => format!("pinned at {v} ({})", cells_updater::text::one_line(&h, 100)),
            },
        ),
        (
            "Next window",
            match all
                .get("NextWindow")
                .and_then(|v| u64::try_from(v).ok())
                .unwrap_or(0)
            {
                0 => "any time (no [policy] windows)".to_string(),
                t if t <= cells_updater::daemon::now_us() => {
                    format!("open now (since {})", format_time(t))
                }
                t => format_time(t),
            },
        ),
        (
            "Last error",
            or_dash(cells_updater::text::one_line(
                &get_str(&all, "LastError"),
                300,
            )),
        ),
        ("Current job", or_dash(get_str(&all, "CurrentJob"))),
        ("Daemon version", get_str(&all, "DaemonVersion")),
    ];
    for (k, v) in rows {
        println!("{:<18} {v}", format!("{k}:"));
    }
    Ok(())
}

/// What `check --auto` goes by (from the configuration).
pub struct Auto {
    /// `[policy] auto`.
    pub policy: cells_updater::config::AutoPolicy,
    /// `[policy] windows` and `timezone`.
    pub schedule: cells_updater::schedule::Schedule,
    /// `[policy] check_interval`.
    pub check_interval: Duration,
}

fn bool_of(p: &HashMap<String, OwnedValue>, k: &str) -> bool {
    p.get(k)
        .and_then(|v| bool::try_from(v).ok())
        .unwrap_or(false)
}

fn u64_of(p: &HashMap<String, OwnedValue>, k: &str) -> u64 {
    p.get(k).and_then(|v| u64::try_from(v).ok()).unwrap_or(0)
}

async fn manager_props(conn: &zbus::Connection) -> Result<HashMap<String, OwnedValue>, Failure> {
    let props = zbus::fdo::PropertiesProxy::builder(conn)
        .destination(cells_updater::contract::BUS_NAME)?
        .path(cells_updater::contract::MANAGER_PATH)?
        .build()
        .await?;
    let iface = zbus::names::InterfaceName::from_static_str_unchecked(
        cells_updater::contract::MANAGER_INTERFACE,
    );
    Ok(props.get_all(iface).await.map_err(zbus::Error::from)?)
}

/// Prints the releases for a person: a table, each with its label and the first lines of
/// its changelog (all made inert: the update server wrote them).
fn print_releases(releases: &[HashMap<String, OwnedValue>]) {
    if releases.is_empty() {
        println!("The update server offers no release for this installation.");
        return;
    }
    println!(
        "{:<14} {:<8} {:<14} {:>10}  LABEL",
        "VERSION", "ALLOWED", "REASON", "SIZE MiB"
    );
    for r in releases {
        let inert = |k: &str, max| cells_updater::text::one_line(&get_str(r, k), max);
        let mut reason = or_dash(inert("Reason", 40));
        if let Some(at) = r.get("EligibleAt").and_then(|v| i64::try_from(v).ok()) {
            reason = format!(
                "{reason} (eligible {})",
                format_time(at.max(0) as u64 * 1_000_000)
            );
        }
        println!(
            "{:<14} {:<8} {:<14} {:>10.1}  {}",
            inert("Version", 40),
            if bool_of(r, "Allowed") { "yes" } else { "no" },
            reason,
            u64_of(r, "Size") as f64 / 1048576.0,
            inert("Label", 80)
        );
        let log = cells_updater::text::multi_line(&get_str(r, "ChangeLog"));
        for line in log.lines().filter(|l| !l.trim().is_empty()).take(2) {
            println!("    {}", cells_updater::text::one_line(line.trim(), 96));
        }
    }
}

/// `check [--json] [--auto]`.
pub async fn check(conn: &zbus::Connection, json: bool, auto: Option<Auto>) -> Result<(), Failure> {
    let manager = ManagerProxy::new(conn).await?;
    let props = manager_props(conn).await?;
    let now_us = cells_updater::daemon::now_us();
    // The timer runs every 15 minutes; the update server is asked once per check interval.
    let due = auto.as_ref().is_none_or(|a| {
        now_us.saturating_sub(u64_of(&props, "LastCheck")) >= a.check_interval.as_micros() as u64
    });
    let releases = if due {
        manager.check(HashMap::new()).await?
    } else {
        Vec::new()
    };
    if json && auto.is_none() {
        let list: Vec<serde_json::Value> = releases
            .iter()
            .map(|r| serde_json::Value::Object(props_to_json(r)))
            .collect();
        println!(
            "{}",
            cells_updater::text::json(
                &serde_json::json!({"format": JSON_FORMAT, "releases": list})
            )
        );
    } else if due && !json {
        print_releases(&releases);
    } else if !json {
        println!(
            "Last check {}; the next one is due after [policy] check_interval.",
            format_time(u64_of(&props, "LastCheck"))
        );
    }
    let Some(auto) = auto else { return Ok(()) };
    let say = |text: String| {
        if json {
            println!(
                "{}",
                cells_updater::text::json(
                    &serde_json::json!({"format": JSON_FORMAT, "auto": text})
                )
            );
        } else {
            println!("{text}");
        }
    };
    let installed = get_str(&props, "InstalledVersion");
    let installed_v = cells_updater::version::CellsVersion::parse(&installed);
    // Not due: the allowed versions of the last check stand in for the server's answer.
    let offered: Vec<String> = if due {
        releases
            .iter()
            .filter(|r| bool_of(r, "Allowed"))
            .map(|r| get_str(r, "Version"))
            .collect()
    } else {
        props
            .get("AvailableVersions")
            .and_then(|v| <Vec<String>>::try_from(v.try_clone().ok()?).ok())
            .unwrap_or_default()
    };
    let (hold, hold_version, staged) = (
        get_str(&props, "Hold"),
        get_str(&props, "HoldVersion"),
        get_str(&props, "StagedVersion"),
    );
    let now = jiff::Timestamp::now();
    let decide = |installed: &cells_updater::version::CellsVersion| {
        cells_updater::policy::auto_decide(&cells_updater::policy::AutoFacts {
            policy: auto.policy,
            hold: &hold,
            hold_version: &hold_version,
            installed,
            offered: &offered,
            staged: &staged,
            in_window: auto.schedule.allows(now),
        })
    };
    use cells_updater::policy::AutoDecision;
    let decision = match &installed_v {
        Ok(i) => decide(i),
        // A hold answers before the installed version matters.
        Err(_) if !hold.is_empty() && hold_version.is_empty() => AutoDecision::Held(hold.clone()),
        Err(_) => {
            return Err(Failure::failed(format!(
                "the installed version is unknown ({installed:?}); not updating"
            )))
        }
    };
    let wait_message = |target: &cells_updater::version::CellsVersion| {
        let next = auto.schedule.next(now).map_or_else(
            || "-".to_string(),
            |(s, _)| format_time(s.as_microsecond().max(0) as u64),
        );
        format!(
            "{target} is staged; it will be applied in the next maintenance window, {next} ({}).",
            auto.schedule.tz_name()
        )
    };
    match decision {
        AutoDecision::Held(why) => say(format!(
            "Held ({}): nothing is installed automatically.",
            cells_updater::text::one_line(&why, 200)
        )),
        AutoDecision::Nothing => say("Auto policy: nothing to install.".into()),
        AutoDecision::Install {
            target,
            from_staged,
        } => {
            say(format!("Auto policy allows {target}: updating."));
            let path = if from_staged {
                let mut o: HashMap<&str, Value<'_>> = HashMap::new();
                o.insert("Version", Value::from(target.to_string()));
                manager.apply(o).await?
            } else {
                manager.update(&target.to_string(), HashMap::new()).await?
            };
            return follow(conn, &manager, path, json).await;
        }
        AutoDecision::Stage { target } => {
            say(format!("Auto policy allows {target}: staging it now."));
            let path = manager.stage(&target.to_string(), HashMap::new()).await?;
            follow(conn, &manager, path, json).await?;
            say(wait_message(&target));
        }
        AutoDecision::Wait { target } => say(wait_message(&target)),
    }
    Ok(())
}

/// `changelog VERSION`: the release's full changelog, made inert.
pub async fn changelog(conn: &zbus::Connection, version: &str) -> Result<(), Failure> {
    let manager = ManagerProxy::new(conn).await?;
    let releases = manager.check(HashMap::new()).await?;
    let r = releases
        .iter()
        .find(|r| get_str(r, "Version") == version)
        .ok_or_else(|| {
            Failure::failed(format!("the update server offers no release {version:?}"))
        })?;
    println!(
        "{} {}",
        cells_updater::text::one_line(&get_str(r, "Version"), 40),
        cells_updater::text::one_line(&get_str(r, "Label"), 120)
    );
    println!();
    println!(
        "{}",
        cells_updater::text::multi_line(&get_str(r, "ChangeLog"))
    );
    Ok(())
}

/// `hold [--reason TEXT] [--version V]` and `unhold`.
pub async fn hold(
    conn: &zbus::Connection,
    hold: Option<(String, Option<String>)>,
) -> Result<(), Failure> {
    let manager = ManagerProxy::new(conn).await?;
    match hold {
        Some((reason, version)) => {
            let mut o: HashMap<&str, Value<'_>> = HashMap::new();
            if let Some(v) = &version {
                o.insert("Version", Value::from(v.as_str()));
            }
            manager.hold(&reason, o).await?;
            match version {
                Some(v) => println!("Automatic installs are pinned at or below {v}."),
                None => println!("Updates are held: nothing is installed automatically, and Update/Apply need --force."),
            }
        }
        None => {
            manager.release().await?;
            println!("The hold is released.");
        }
    }
    Ok(())
}

/// `forget-bad ENTRY`: clears a bad mark.
pub async fn forget_bad(conn: &zbus::Connection, entry: &str) -> Result<(), Failure> {
    ManagerProxy::new(conn)
        .await?
        .forget_bad_version(entry)
        .await?;
    println!(
        "{} is no longer marked bad here: it may be installed again.",
        cells_updater::text::one_line(entry, 80)
    );
    Ok(())
}

/// Which mutating method to call.
pub enum Mutation {
    Stage(String),
    StageFile {
        file: std::fs::File,
        version: String,
        checksum: String,
        signature: String,
        package: Option<String>,
    },
    Apply {
        restart: bool,
        force: bool,
    },
    Update(String, bool),
    Rollback,
    Enterprise {
        license: String,
        version: Option<String>,
    },
}

/// Calls a job-creating method and follows the job to its end.
pub async fn mutate(conn: &zbus::Connection, what: Mutation, json: bool) -> Result<(), Failure> {
    let manager = ManagerProxy::new(conn).await?;
    // Subscribe before calling, so a quick job's JobFinished is not missed.
    let finished = manager.receive_job_finished().await?;
    let path = match what {
        Mutation::Stage(v) => manager.stage(&v, HashMap::new()).await?,
        Mutation::StageFile {
            file,
            version,
            checksum,
            signature,
            package,
        } => {
            let mut meta: HashMap<&str, Value<'_>> = HashMap::new();
            meta.insert("Version", Value::from(version));
            meta.insert("Checksum", Value::from(checksum));
            meta.insert("Signature", Value::from(signature));
            if let Some(p) = package {
                meta.insert("PackageName", Value::from(p));
            }
            use std::os::fd::AsFd;
            manager
                .stage_from_fd(zbus::zvariant::Fd::from(file.as_fd()), meta)
                .await?
        }
        Mutation::Apply { restart, force } => {
            let mut o: HashMap<&str, Value<'_>> = HashMap::new();
            if !restart {
                o.insert("Restart", Value::from(false));
            }
            if force {
                o.insert("Force", Value::from(true));
            }
            manager.apply(o).await?
        }
        Mutation::Update(v, force) => {
            let mut o: HashMap<&str, Value<'_>> = HashMap::new();
            if force {
                o.insert("Force", Value::from(true));
            }
            manager.update(&v, o).await?
        }
        Mutation::Rollback => manager.rollback(HashMap::new()).await?,
        Mutation::Enterprise { license, version } => {
            let mut o: HashMap<&str, Value<'_>> = HashMap::new();
            if let Some(v) = version {
                o.insert("Version", Value::from(v));
            }
            manager.upgrade_to_enterprise(&license, o).await?
        }
    };
    follow_with(conn, finished, path, json).await
}

async fn follow(
    conn: &zbus::Connection,
    manager: &ManagerProxy<'_>,
    path: OwnedObjectPath,
    json: bool,
) -> Result<(), Failure> {
    let finished = manager.receive_job_finished().await?;
    follow_with(conn, finished, path, json).await
}

/// Follows a job: progress from `PropertiesChanged`, the end from `JobFinished` (or from the
/// job's own `State`, if it ended before we looked).
async fn follow_with(
    conn: &zbus::Connection,
    mut finished: JobFinishedStream,
    path: OwnedObjectPath,
    json: bool,
) -> Result<(), Failure> {
    let props = zbus::fdo::PropertiesProxy::builder(conn)
        .destination(cells_updater::contract::BUS_NAME)?
        .path(path.clone())?
        .build()
        .await?;
    let mut changes = props.receive_properties_changed().await?;
    let job_iface = zbus::names::InterfaceName::from_static_str_unchecked(
        cells_updater::contract::JOB_INTERFACE,
    );
    let mut bar = Progress::new(json);
    let initial = props
        .get_all(job_iface.clone())
        .await
        .map_err(zbus::Error::from)?;
    bar.show(&initial);
    let done = |p: &HashMap<String, OwnedValue>| get_str(p, "State") != "running";
    if done(&initial) {
        return bar.end(
            &get_str(&initial, "State"),
            &get_str(&initial, "Error"),
            &get_str(&initial, "Message"),
            &path,
        );
    }
    let mut known = initial;
    // A daemon that dies mid-job ends no signal stream: watch the name's owner too.
    let dbus = zbus::fdo::DBusProxy::new(conn).await?;
    let mut owner = dbus
        .receive_name_owner_changed_with_args(&[(0, cells_updater::contract::BUS_NAME)])
        .await?;
    loop {
        tokio::select! {
            change = owner.next() => {
                let gone = change
                    .and_then(|c| c.args().ok().map(|a| a.new_owner().is_none()))
                    .unwrap_or(true);
                if gone {
                    return Err(Failure {
                        code: EXIT_UNREACHABLE,
                        message: format!(
                            "the daemon stopped while {path} was running; it finishes or undoes \
                             the step when it starts again (see journalctl -u cells-updater)"
                        ),
                    });
                }
            }
            sig = finished.next() => {
                let Some(sig) = sig else { return Err(Failure::failed("the daemon went away".into())) };
                let Ok(args) = sig.args() else { continue };
                if args.job.as_str() == path.as_str() {
                    return bar.end(&args.state, &args.error, &args.message, &path);
                }
            }
            change = changes.next() => {
                let Some(change) = change else { return Err(Failure::failed("the daemon went away".into())) };
                let Ok(args) = change.args() else { continue };
                for (k, v) in args.changed_properties() {
                    if let Ok(v) = OwnedValue::try_from(v) {
                        known.insert(k.to_string(), v);
                    }
                }
                bar.show(&known);
            }
            _ = tokio::time::sleep(FOLLOW_SILENCE) => {
                return Err(Failure::failed(format!(
                    "no news from {path} for {} s; it may still be running (see `cells-updater status`)",
                    FOLLOW_SILENCE.as_secs()
                )));
            }
        }
    }
}

/// A progress bar on a terminal (indicatif), plain lines otherwise, JSON lines with `--json`.
struct Progress {
    json: bool,
    bar: Option<indicatif::ProgressBar>,
    last: String,
}

impl Progress {
    fn new(json: bool) -> Self {
        let bar = (!json && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::with_draw_target(
                Some(100),
                indicatif::ProgressDrawTarget::stderr(),
            );
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("{prefix} [{bar:25}] {pos:>3}%  {msg}")
            {
                bar.set_style(style.progress_chars("#>."));
            }
            bar
        });
        Progress {
            json,
            bar,
            last: String::new(),
        }
    }

    fn show(&mut self, p: &HashMap<String, OwnedValue>) {
        if self.json {
            return;
        }
        let percent = p
            .get("Percent")
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(0);
        let done = p
            .get("BytesDone")
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(0);
        let total = p
            .get("BytesTotal")
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(0);
        let phase = get_str(p, "Phase");
        let version = get_str(p, "Version");
        match &self.bar {
            Some(bar) => {
                bar.set_prefix(format!("{} {version}:", get_str(p, "Kind")));
                bar.set_position(u64::from(percent.min(100)));
                bar.set_message(format!(
                    "{phase}  {:.1}/{:.1} MiB",
                    done as f64 / 1048576.0,
                    total as f64 / 1048576.0
                ));
            }
            None => {
                // Plain lines: one per phase and per 10 % step.
                let key = format!("{phase} {}", percent / 10);
                if key != self.last {
                    eprintln!("{} {version}: {phase} {percent}%", get_str(p, "Kind"));
                    self.last = key;
                }
            }
        }
    }

    fn end(
        &self,
        state: &str,
        error: &str,
        message: &str,
        path: &OwnedObjectPath,
    ) -> Result<(), Failure> {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
        if self.json {
            println!(
                "{}",
                cells_updater::text::json(
                    &serde_json::json!({"format": JSON_FORMAT, "job": path.as_str(), "state": state, "error": error, "message": message})
                )
            );
        }
        if state == "succeeded" {
            if !self.json {
                println!("{message}");
            }
            Ok(())
        } else {
            Err(Failure::failed(if error.is_empty() {
                format!("job {state}: {message}")
            } else {
                format!("{error}: {message}")
            }))
        }
    }
}

/// `license install`.
pub async fn install_license(conn: &zbus::Connection, key: &str) -> Result<(), Failure> {
    let manager = ManagerProxy::new(conn).await?;
    manager.install_license(key).await?;
    println!("License installed.");
    Ok(())
}

/// Reads a license key from a file or standard input.
pub fn read_license(file: Option<&std::path::Path>) -> Result<String, Failure> {
    let text = match file {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| Failure::usage(format!("cannot read {}: {e}", p.display())))?,
        None => std::io::read_to_string(std::io::stdin())
            .map_err(|e| Failure::usage(format!("cannot read standard input: {e}")))?,
    };
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::format_time;

    /// The proxy's attribute must spell the contract's names (it cannot name the constants).
    #[test]
    fn the_proxy_spells_the_contract() {
        use cells_updater::contract;
        use zbus::proxy::Defaults;
        let s = |v: &Option<String>| v.clone().unwrap_or_default();
        assert_eq!(
            s(&super::ManagerProxy::INTERFACE
                .as_ref()
                .map(|n| n.to_string())),
            contract::MANAGER_INTERFACE
        );
        assert_eq!(
            s(&super::ManagerProxy::DESTINATION
                .as_ref()
                .map(|n| n.to_string())),
            contract::BUS_NAME
        );
        assert_eq!(
            s(&super::ManagerProxy::PATH.as_ref().map(|n| n.to_string())),
            contract::MANAGER_PATH
        );
    }

    #[test]
    fn times_are_utc_dates() {
        assert_eq!(format_time(0), "never");
        assert_eq!(
            format_time(1_740_420_600_000_000),
            "2025-02-24 18:10:00 UTC"
        );
        assert_eq!(format_time(951_782_400_000_000), "2000-02-29 00:00:00 UTC");
    }
}
