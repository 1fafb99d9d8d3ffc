//! Following a job to its end: progress from `PropertiesChanged`, the end from `JobFinished`
//! (or from the job's own `State`), the daemon's disappearance from `NameOwnerChanged`.

use super::bus::{Failure, JobFinishedStream, ManagerProxy, JSON_FORMAT};
use super::render::get_str;
use super::EXIT_UNREACHABLE;
use cells_updater::contract::job_prop;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Duration;
use zbus::zvariant::{OwnedObjectPath, OwnedValue};

/// Longest silence from a followed job before the client gives up waiting (the job goes on).
const FOLLOW_SILENCE: Duration = Duration::from_secs(600);

pub(super) async fn follow(
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
pub(super) async fn follow_with(
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
    let mut bar = ProgressView::new(json);
    let initial = props
        .get_all(job_iface.clone())
        .await
        .map_err(zbus::Error::from)?;
    bar.show(&initial);
    let done = |p: &HashMap<String, OwnedValue>| get_str(p, job_prop::STATE) != "running";
    if done(&initial) {
        return bar.end(
            &get_str(&initial, job_prop::STATE),
            &get_str(&initial, job_prop::ERROR),
            &get_str(&initial, job_prop::MESSAGE),
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
struct ProgressView {
    json: bool,
    bar: Option<indicatif::ProgressBar>,
    last: String,
}

impl ProgressView {
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
        ProgressView {
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
            .get(job_prop::PERCENT)
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(0);
        let done = p
            .get(job_prop::BYTES_DONE)
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(0);
        let total = p
            .get(job_prop::BYTES_TOTAL)
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(0);
        let phase = get_str(p, job_prop::PHASE);
        let version = get_str(p, job_prop::VERSION);
        match &self.bar {
            Some(bar) => {
                bar.set_prefix(format!("{} {version}:", get_str(p, job_prop::KIND)));
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
                    eprintln!(
                        "{} {version}: {phase} {percent}%",
                        get_str(p, job_prop::KIND)
                    );
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
