//! `cells-updater config` and `cells-updater doctor`: run as root, without the daemon's help
//! (the daemon may be the thing that is broken).

use super::bus::Failure;
use cells_updater::config::Config;
use cells_updater::doctor::{Host, KeySource, Level};
use std::process::ExitCode;

/// The JSON documents' format number.
const JSON_FORMAT: u32 = 1;

fn need_root(what: &str) -> Result<(), Failure> {
    if nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    Err(Failure::failed(format!(
        "{what} inspects the host as the daemon does (the Cells user's files, sandboxed probes): \
         run it as root"
    )))
}

fn key_source(s: KeySource) -> &'static str {
    match s {
        KeySource::Vendor => "vendor",
        KeySource::Etc => "/etc",
    }
}

/// `config [--json] [--cells-key]`.
pub async fn config(cfg: Config, json: bool, cells_key: bool) -> Result<(), Failure> {
    need_root("config")?;
    let host = Host::open(cfg).await;
    let report = host.settings().await;
    if cells_key {
        // The key an admin may decide to trust: printed only after it parsed as a key.
        return match &report.cells_key {
            Some(k) if k.ids.len() > 1 => Err(Failure::failed(format!(
                "pydio.json's publicKey holds {} keys ({}); Pydio gives one, so none is printed \
                 for trusting: check pydio.json",
                k.ids.len(),
                k.ids
                    .iter()
                    .map(|id| cells_updater::trust::keys_short_id(id))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
            Some(k) if k.id.is_some() && k.pems.len() == 1 => {
                // Rebuilt from the parsed key: none of the file's own text reaches the terminal.
                print!("{}", k.pems[0]);
                Ok(())
            }
            Some(k) => Err(Failure::failed(format!(
                "pydio.json's publicKey is not a usable key: {}",
                k.problem.clone().unwrap_or_default()
            ))),
            None => Err(Failure::failed(
                "pydio.json names no publicKey (or is not followed)".into(),
            )),
        };
    }
    let e = &report.effective;
    let keys = report
        .keys
        .as_ref()
        .map_err(|err| Failure::failed(err.message()))?;
    if json {
        let doc = serde_json::json!({
            "format": JSON_FORMAT,
            "server": {"url": e.url, "source": e.url_source.to_string()},
            "channel": {"value": e.channel, "source": e.channel_source.to_string()},
            "keys": keys,
            "cells_config": {
                "dir": report.cells_dir,
                "problem": report.cells_problem,
                "key": report.cells_key,
            },
        });
        println!("{}", cells_updater::text::json(&doc));
        return Ok(());
    }
    println!("update server  {}  ({})", e.url, e.url_source);
    println!("channel        {}  ({})", e.channel, e.channel_source);
    if keys.is_empty() {
        println!("trusted keys   none: no release can be verified");
    }
    for (i, k) in keys.iter().enumerate() {
        println!(
            "{}{}  {:<8}  {:<6}  {}",
            if i == 0 {
                "trusted keys   "
            } else {
                "               "
            },
            cells_updater::trust::keys_short_id(&k.id),
            k.algorithm,
            key_source(k.source),
            k.file
        );
    }
    match (&report.cells_dir, &report.cells_problem) {
        (_, Some(p)) => println!(
            "pydio.json     not followed: {}",
            cells_updater::text::one_line(p, 300)
        ),
        (Some(d), None) => println!("pydio.json     {}/pydio.json", d.display()),
        (None, None) => {
            println!("pydio.json     not followed ([server] follow_cells_config = false)")
        }
    }
    if let Some(k) = &report.cells_key {
        let ids = k
            .ids
            .iter()
            .map(|id| cells_updater::trust::keys_short_id(id))
            .collect::<Vec<_>>()
            .join(", ");
        if k.ids.len() > 1 {
            println!(
                "               warning: its publicKey holds {} keys ({ids}); Pydio gives one",
                k.ids.len()
            );
        }
        match (&k.id, k.trusted) {
            (Some(_), true) => {
                println!("               its key {ids} is trusted (from /etc or the vendor)")
            }
            (Some(_), false) => {
                println!(
                    "               its key {ids} is reported, not trusted (the Cells user can write it);"
                );
                println!(
                    "               to trust it: cells-updater config --cells-key > /etc/cells-updater/keys.d/cells.pem"
                );
            }
            (None, _) => println!(
                "               its publicKey is not a usable key: {}",
                cells_updater::text::one_line(&k.problem.clone().unwrap_or_default(), 300)
            ),
        }
    }
    Ok(())
}

/// `doctor [--json]`: one line per check; exit 1 when one fails.
pub async fn doctor(cfg: Config, json: bool, bus: Option<&str>) -> ExitCode {
    if let Err(f) = need_root("doctor") {
        eprintln!("cells-updater: {}", f.message);
        return ExitCode::from(f.code);
    }
    let fleet = cfg.fleet.is_some().then(|| cfg.clone());
    let host = Host::open(cfg).await;
    let mut findings = host.doctor().await;
    if let Some(cfg) = fleet {
        findings.extend(fleet_findings(&cfg, bus).await);
    }
    let failed = findings.iter().any(|f| f.level == Level::Fail);
    if json {
        println!(
            "{}",
            cells_updater::text::json(
                &serde_json::json!({"format": JSON_FORMAT, "ok": !failed, "checks": findings})
            )
        );
    } else {
        for f in &findings {
            let level = match f.level {
                Level::Ok => "ok",
                Level::Warn => "warn",
                Level::Fail => "FAIL",
            };
            println!("{level:<5} {:<12} {}", f.check, f.message);
            if !f.fix.is_empty() {
                println!("{:<18} fix: {}", "", f.fix);
            }
        }
        let (warns, fails) = (
            findings.iter().filter(|f| f.level == Level::Warn).count(),
            findings.iter().filter(|f| f.level == Level::Fail).count(),
        );
        println!(
            "{} checks: {} ok, {warns} warnings, {fails} failures",
            findings.len(),
            findings.len() - warns - fails
        );
    }
    if failed {
        ExitCode::from(super::EXIT_FAILED)
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(feature = "fleet")]
async fn fleet_findings(cfg: &Config, bus: Option<&str>) -> Vec<cells_updater::doctor::Finding> {
    super::fleet::doctor(cfg, bus).await
}

#[cfg(not(feature = "fleet"))]
async fn fleet_findings(_cfg: &Config, _bus: Option<&str>) -> Vec<cells_updater::doctor::Finding> {
    vec![cells_updater::doctor::Finding {
        check: "fleet",
        level: Level::Fail,
        message: "[fleet] is set but this build has no fleet support (cargo feature fleet)".into(),
        fix: "install a package built with the fleet feature".into(),
    }]
}
