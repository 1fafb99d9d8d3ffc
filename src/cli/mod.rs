//! The `cells-updater` command line: argument definitions and dispatch.

mod bus;
mod client;
mod docs;
#[cfg(feature = "fleet")]
mod fleet;
mod follow;
mod inspect;
mod render;
mod verify;

use bus::{exit, Failure};
use clap::{Parser, Subcommand};
use client::Mutation;
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit status: the operation failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit status: usage error.
pub const EXIT_USAGE: u8 = 2;
/// Exit status: the daemon is unreachable.
pub const EXIT_UNREACHABLE: u8 = 3;

/// Verifies, installs and rolls back Pydio Cells updates.
#[derive(Debug, Parser)]
#[command(name = "cells-updater", version, about, max_term_width = 100)]
pub struct Cli {
    /// Talk to (or, for `daemon`, serve on) this D-Bus address instead of the system bus.
    #[arg(
        long,
        global = true,
        value_name = "ADDR",
        env = "CELLS_UPDATER_BUS_ADDRESS"
    )]
    pub bus_address: Option<String>,
    /// Configuration file (default /etc/cells-updater/config.toml, plus config.d/*.toml).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Resolve every absolute path under this directory (tests and scratch trees).
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        env = "CELLS_UPDATER_ROOT",
        hide = true
    )]
    pub root: Option<PathBuf>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (what the systemd unit starts).
    Daemon,
    /// The same as `fleet agent`.
    #[command(hide = true)]
    FleetAgent,
    /// The cluster this node belongs to (docs/fleet.md; needs a build with the `fleet`
    /// feature and a [fleet] section): its agent, status, rollout, halt.
    Fleet {
        /// What to do.
        #[command(subcommand)]
        command: FleetCommand,
    },
    /// Show the manager's properties.
    Status {
        /// One JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Ask the update server now.
    Check {
        /// One JSON document on stdout.
        #[arg(long)]
        json: bool,
        /// Also start Update when the configured [policy] auto allows it (the timer runs this).
        #[arg(long)]
        auto: bool,
    },
    /// Download, verify and probe a release (newest allowed when VERSION is omitted), or
    /// stage a binary you already have with --file.
    Stage {
        /// Version to stage.
        version: Option<String>,
        /// A binary already on this machine (sent as a file descriptor).
        #[arg(long, value_name = "PATH", requires_all = ["file_version", "checksum", "signature"])]
        file: Option<PathBuf>,
        /// Version of the --file binary.
        #[arg(
            long = "version",
            id = "file_version",
            value_name = "V",
            requires = "file"
        )]
        file_version: Option<String>,
        /// Base64 SHA-256 of the --file binary.
        #[arg(long, value_name = "B64", requires = "file")]
        checksum: Option<String>,
        /// Base64 signature of the --file binary.
        #[arg(long, value_name = "B64", requires = "file")]
        signature: Option<String>,
        /// Package of the --file binary (PydioHome or PydioEnterprise).
        #[arg(long, value_name = "NAME", requires = "file")]
        package: Option<String>,
    },
    /// Swap the staged binary in, restart, health-check, roll back on failure.
    Apply {
        /// Swap only; do not restart the unit.
        #[arg(long)]
        no_restart: bool,
        /// Go past a hold or its pin (the journal records it).
        #[arg(long)]
        force: bool,
    },
    /// Stage then apply (newest allowed when VERSION is omitted).
    Update {
        /// Version to install.
        version: Option<String>,
        /// Go past a hold, its pin and [policy] min_release_age (the journal records it).
        #[arg(long)]
        force: bool,
    },
    /// Hold automatic installs (and make Update/Apply need --force); with --version, pin them
    /// at or below that version instead.
    Hold {
        /// Why (shown by status).
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
        /// Pin: automatic installs stay at or below this version.
        #[arg(long, value_name = "V")]
        version: Option<String>,
    },
    /// Release the hold.
    Unhold,
    /// Clear the mark of a release that failed its health check here (see `status`), so it
    /// may be installed again.
    ForgetBad {
        /// A version (both editions), or an entry as `status` lists it (PydioHome:4.4.6).
        version: String,
    },
    /// Print a release's full changelog.
    Changelog {
        /// The version.
        version: String,
    },
    /// Put the previous binary back and restart.
    Rollback,
    /// Enterprise license.
    License {
        #[command(subcommand)]
        command: LicenseCommand,
    },
    /// Check an Enterprise license, then install the Enterprise binary.
    UpgradeEnterprise {
        /// File holding the license key.
        #[arg(long, value_name = "PATH")]
        license_file: PathBuf,
        /// Enterprise version to install (default: the installed version).
        #[arg(long, value_name = "V")]
        version: Option<String>,
    },
    /// Show the update server, channel and trusted keys in force, each with its source (as
    /// root).
    Config {
        /// One JSON document on stdout.
        #[arg(long)]
        json: bool,
        /// Print the public key found in Cells' pydio.json (reported, never trusted), to
        /// review and put in /etc/cells-updater/keys.d if you set it yourself.
        #[arg(long)]
        cells_key: bool,
    },
    /// Inspect this host: one line per check (ok, warn, FAIL) with the fix; exit 1 when a
    /// check fails (as root).
    Doctor {
        /// One JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Check a binary against the trusted keys, offline; no daemon needed.
    Verify(verify::VerifyArgs),
    /// A helper process the daemon starts (not for people).
    #[command(hide = true)]
    Internal {
        /// The helper: probe, fetch, check, http-get, license-read, license-write, cells-config.
        command: String,
        /// Its fixed arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Write man pages and shell completions (used by dist/install.sh).
    #[command(hide = true)]
    GenerateDocs {
        /// Output directory.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

/// `license` subcommands.
#[derive(Debug, Subcommand)]
pub enum LicenseCommand {
    /// Install the Enterprise license key (from --file or standard input).
    Install {
        /// File holding the key; standard input when omitted.
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
    },
}

/// The `fleet` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum FleetCommand {
    /// Run the fleet agent (what cells-updater-fleet.service starts).
    Agent,
    /// The cluster: each node's version, state, slot, heartbeat and last error; the rollout
    /// target, the halt, the bad list, etcd's members and leader.
    Status {
        /// One JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Roll VERSION out to every node, max-parallel at a time (each inside its own hold
    /// and [policy] windows unless --now).
    Rollout {
        /// The release every node should run.
        version: String,
        /// Nodes between their swap and healthy at once (default: [fleet] max_parallel).
        #[arg(long, value_name = "N")]
        max_parallel: Option<u32>,
        /// After the first node is healthy, how long before the next starts (e.g. 10m).
        #[arg(long, value_name = "DURATION")]
        canary_soak: Option<String>,
        /// Ignore the nodes' [policy] windows (a hold still binds).
        #[arg(long)]
        now: bool,
        /// PydioHome or PydioEnterprise (default: what this node runs).
        #[arg(long, value_name = "NAME")]
        package: Option<String>,
    },
    /// Halt the cluster: no node starts an update until `fleet resume`.
    Halt {
        /// Why (shown by status).
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Lift the halt.
    Resume,
    /// Clear the cluster's bad mark on VERSION.
    ForgetBad {
        /// The release.
        version: String,
    },
}

/// Parses the arguments and runs the command.
#[cfg(feature = "fleet")]
async fn fleet_agent(
    cfg: cells_updater::config::Config,
    bus: cells_updater::daemon::Bus,
) -> Result<(), Failure> {
    cells_updater::fleet::agent::run(cfg, bus)
        .await
        .map_err(|e| Failure {
            code: EXIT_FAILED,
            message: format!("{e:#}"),
        })
}

#[cfg(feature = "fleet")]
async fn fleet_command(
    cfg: cells_updater::config::Config,
    command: FleetCommand,
    bus: Option<&str>,
) -> Result<(), Failure> {
    fleet::run(cfg, command, bus).await
}

#[cfg(not(feature = "fleet"))]
async fn fleet_command(
    _cfg: cells_updater::config::Config,
    _command: FleetCommand,
    _bus: Option<&str>,
) -> Result<(), Failure> {
    fleet_agent(_cfg, cells_updater::daemon::Bus::System).await
}

#[cfg(not(feature = "fleet"))]
async fn fleet_agent(
    _cfg: cells_updater::config::Config,
    _bus: cells_updater::daemon::Bus,
) -> Result<(), Failure> {
    Err(Failure {
        code: EXIT_FAILED,
        message: "this build of cells-updater has no fleet support (cargo feature `fleet`)".into(),
    })
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    let root = cli.root.clone().unwrap_or_else(|| PathBuf::from("/"));
    if let Command::Internal { command, args } = &cli.command {
        return cells_updater::helper::child::main(command, args);
    }
    if let Command::Verify(args) = &cli.command {
        return verify::run(&root, cli.config.as_deref(), args);
    }
    if let Command::GenerateDocs { out } = &cli.command {
        return match docs::generate(out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!(
                    "cells-updater: cannot write the docs to {}: {e}",
                    out.display()
                );
                ExitCode::from(EXIT_FAILED)
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cells-updater: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    runtime.block_on(run(cli, root))
}

fn load_config(
    root: &std::path::Path,
    file: Option<&std::path::Path>,
) -> Result<cells_updater::config::Config, Failure> {
    cells_updater::config::Config::load(root, file).map_err(|e| Failure {
        code: EXIT_FAILED,
        message: e.to_string(),
    })
}

async fn run(cli: Cli, root: PathBuf) -> ExitCode {
    let bus = cli.bus_address.as_deref();
    let json = matches!(
        cli.command,
        Command::Status { json: true } | Command::Check { json: true, .. }
    );
    match cli.command {
        Command::Doctor { json } => {
            return match load_config(&root, cli.config.as_deref()) {
                Ok(cfg) => inspect::doctor(cfg, json, bus).await,
                Err(f) => exit(Err(f)),
            }
        }
        Command::Config { json, cells_key } => {
            let r = match load_config(&root, cli.config.as_deref()) {
                Ok(cfg) => inspect::config(cfg, json, cells_key).await,
                Err(f) => Err(f),
            };
            return exit(r);
        }
        _ => {}
    }
    let result = async {
        match cli.command {
            Command::FleetAgent
            | Command::Fleet {
                command: FleetCommand::Agent,
            } => {
                let cfg = load_config(&root, cli.config.as_deref())?;
                let target = match bus {
                    Some(a) => cells_updater::daemon::Bus::Address(a.to_string()),
                    None => cells_updater::daemon::Bus::System,
                };
                fleet_agent(cfg, target).await
            }
            Command::Fleet { command } => {
                let cfg = load_config(&root, cli.config.as_deref())?;
                fleet_command(cfg, command, bus).await
            }
            Command::Daemon => {
                let cfg = load_config(&root, cli.config.as_deref())?;
                let target = match bus {
                    Some(a) => cells_updater::daemon::Bus::Address(a.to_string()),
                    None => cells_updater::daemon::Bus::System,
                };
                cells_updater::daemon::run(cfg, target)
                    .await
                    .map_err(|e| Failure {
                        code: EXIT_FAILED,
                        message: format!("{e:#}"),
                    })
            }
            Command::Status { json } => client::status(&bus::connect(bus).await?, json).await,
            Command::Check { json, auto } => {
                let auto = if auto {
                    let cfg = load_config(&root, cli.config.as_deref())?;
                    Some(client::Auto {
                        policy: cfg.auto,
                        schedule: cfg.schedule().map_err(|e| Failure {
                            code: EXIT_FAILED,
                            message: e.to_string(),
                        })?,
                        check_interval: cfg.check_interval,
                    })
                } else {
                    None
                };
                client::check(&bus::connect(bus).await?, json, auto).await
            }
            Command::Changelog { version } => {
                client::changelog(&bus::connect(bus).await?, &version).await
            }
            Command::Hold { reason, version } => {
                client::hold(
                    &bus::connect(bus).await?,
                    Some((reason.unwrap_or_default(), version)),
                )
                .await
            }
            Command::Unhold => client::hold(&bus::connect(bus).await?, None).await,
            Command::ForgetBad { version } => {
                client::forget_bad(&bus::connect(bus).await?, &version).await
            }
            Command::Stage {
                version,
                file: Some(path),
                file_version,
                checksum,
                signature,
                package,
            } => {
                if version.is_some() {
                    return Err(Failure {
                        code: EXIT_USAGE,
                        message: "give either VERSION or --file, not both".into(),
                    });
                }
                let file = std::fs::File::open(&path).map_err(|e| Failure {
                    code: EXIT_USAGE,
                    message: format!("cannot open {}: {e}", path.display()),
                })?;
                let what = Mutation::StageFile {
                    file,
                    version: file_version.unwrap_or_default(),
                    checksum: checksum.unwrap_or_default(),
                    signature: signature.unwrap_or_default(),
                    package,
                };
                client::mutate(&bus::connect(bus).await?, what, json).await
            }
            Command::Stage { version, .. } => {
                client::mutate(
                    &bus::connect(bus).await?,
                    Mutation::Stage(version.unwrap_or_default()),
                    json,
                )
                .await
            }
            Command::Apply { no_restart, force } => {
                client::mutate(
                    &bus::connect(bus).await?,
                    Mutation::Apply {
                        restart: !no_restart,
                        force,
                    },
                    json,
                )
                .await
            }
            Command::Update { version, force } => {
                client::mutate(
                    &bus::connect(bus).await?,
                    Mutation::Update(version.unwrap_or_default(), force),
                    json,
                )
                .await
            }
            Command::Rollback => {
                client::mutate(&bus::connect(bus).await?, Mutation::Rollback, json).await
            }
            Command::License {
                command: LicenseCommand::Install { file },
            } => {
                let key = client::read_license(file.as_deref())?;
                client::install_license(&bus::connect(bus).await?, &key).await
            }
            Command::UpgradeEnterprise {
                license_file,
                version,
            } => {
                let license = client::read_license(Some(&license_file))?;
                client::mutate(
                    &bus::connect(bus).await?,
                    Mutation::Enterprise { license, version },
                    json,
                )
                .await
            }
            Command::Verify(_)
            | Command::GenerateDocs { .. }
            | Command::Internal { .. }
            | Command::Doctor { .. }
            | Command::Config { .. } => Ok(()),
        }
    }
    .await;
    exit(result)
}

/// Prints a library error the way every command does: the D-Bus name, then the message.
pub fn report(err: &cells_updater::Error) -> ExitCode {
    eprintln!("cells-updater: {}: {}", err.dbus_name(), err.message());
    ExitCode::from(EXIT_FAILED)
}
