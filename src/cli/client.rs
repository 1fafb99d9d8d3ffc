//! Client commands: each asks the daemon over D-Bus ([`super::bus`]), follows the job it
//! started ([`super::follow`]) and prints for a person or (`--json`) for a script
//! ([`super::render`]). The `check --auto` decision is the library's
//! (`policy::auto_decide`); this only gathers its facts.

use super::bus::{Failure, ManagerProxy, JSON_FORMAT};
use super::follow::{follow, follow_with};
use super::render::{
    bool_of, format_time, get_str, or_dash, print_releases, props_to_json, u64_of,
};
use cells_updater::contract::{manager_prop, release_key};
use std::collections::HashMap;
use std::time::Duration;
use zbus::zvariant::{OwnedValue, Value};

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
    let avail = strings(manager_prop::AVAILABLE_VERSIONS);
    let bad: Vec<String> = strings(manager_prop::BAD_VERSIONS)
        .iter()
        .map(|b| cells_updater::text::one_line(b, 80))
        .collect();
    let last_check = all
        .get(manager_prop::LAST_CHECK)
        .and_then(|v| u64::try_from(v).ok())
        .unwrap_or(0);
    let rows = [
        ("State", get_str(&all, manager_prop::STATE)),
        (
            "Installed version",
            format!(
                "{} ({}, {})",
                or_dash(get_str(&all, manager_prop::INSTALLED_VERSION)),
                get_str(&all, manager_prop::PACKAGE_NAME),
                get_str(&all, manager_prop::CHANNEL)
            ),
        ),
        (
            "Unit",
            format!(
                "{} -> {}",
                get_str(&all, manager_prop::UNIT),
                or_dash(get_str(&all, manager_prop::BINARY_PATH))
            ),
        ),
        (
            "Staged version",
            or_dash(get_str(&all, manager_prop::STAGED_VERSION)),
        ),
        (
            "Previous version",
            or_dash(get_str(&all, manager_prop::PREVIOUS_VERSION)),
        ),
        ("Available", or_dash(avail.join(", "))),
        ("Marked bad", or_dash(bad.join(", "))),
        ("Last check", format_time(last_check)),
        (
            "Hold",
            match (
                get_str(&all, manager_prop::HOLD),
                get_str(&all, manager_prop::HOLD_VERSION),
            ) {
                (h, _) if h.is_empty() => "-".to_string(),
                (h, v) if v.is_empty() => cells_updater::text::one_line(&h, 120),
                (h, v) => format!("pinned at {v} ({})", cells_updater::text::one_line(&h, 100)),
            },
        ),
        (
            "Next window",
            match all
                .get(manager_prop::NEXT_WINDOW)
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
                &get_str(&all, manager_prop::LAST_ERROR),
                300,
            )),
        ),
        (
            "Current job",
            or_dash(get_str(&all, manager_prop::CURRENT_JOB)),
        ),
        (
            "Daemon version",
            get_str(&all, manager_prop::DAEMON_VERSION),
        ),
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

/// `check [--json] [--auto]`.
pub async fn check(conn: &zbus::Connection, json: bool, auto: Option<Auto>) -> Result<(), Failure> {
    let manager = ManagerProxy::new(conn).await?;
    let props = manager_props(conn).await?;
    let now_us = cells_updater::daemon::now_us();
    // The timer runs every 15 minutes; the update server is asked once per check interval.
    let due = auto.as_ref().is_none_or(|a| {
        now_us.saturating_sub(u64_of(&props, manager_prop::LAST_CHECK))
            >= a.check_interval.as_micros() as u64
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
            format_time(u64_of(&props, manager_prop::LAST_CHECK))
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
    let installed = get_str(&props, manager_prop::INSTALLED_VERSION);
    let installed_v = cells_updater::version::CellsVersion::parse(&installed);
    // Not due: the allowed versions of the last check stand in for the server's answer.
    let offered: Vec<String> = if due {
        releases
            .iter()
            .filter(|r| bool_of(r, release_key::ALLOWED))
            .map(|r| get_str(r, release_key::VERSION))
            .collect()
    } else {
        props
            .get(manager_prop::AVAILABLE_VERSIONS)
            .and_then(|v| <Vec<String>>::try_from(v.try_clone().ok()?).ok())
            .unwrap_or_default()
    };
    let (hold, hold_version, staged) = (
        get_str(&props, manager_prop::HOLD),
        get_str(&props, manager_prop::HOLD_VERSION),
        get_str(&props, manager_prop::STAGED_VERSION),
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
        .find(|r| get_str(r, release_key::VERSION) == version)
        .ok_or_else(|| {
            Failure::failed(format!("the update server offers no release {version:?}"))
        })?;
    println!(
        "{} {}",
        cells_updater::text::one_line(&get_str(r, release_key::VERSION), 40),
        cells_updater::text::one_line(&get_str(r, release_key::LABEL), 120)
    );
    println!();
    println!(
        "{}",
        cells_updater::text::multi_line(&get_str(r, release_key::CHANGE_LOG))
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
