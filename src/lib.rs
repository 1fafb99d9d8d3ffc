//! cells-updater: the privileged half of updating Pydio Cells.
//!
//! Modules, one responsibility each (their layers: docs/architecture.md, `tests/layering.rs`):
//! - [`cancel`]: a job's cancel token (cancellable until the swap begins).
//! - [`cells_config`]: Cells' own update settings in `pydio.json` (read as the Cells user).
//! - [`contract`]: the bus names, paths, interfaces and property names of the contract, written once.
//! - [`config`]: `/etc/cells-updater/config.toml` + `config.d/*.toml`, defaults, root prefix.
//! - [`daemon`]: the bus name, Manager and Job objects, authorization, jobs, sd-notify, idle exit.
//! - [`doctor`]: `cells-updater doctor` and `config`: the host inspected as the daemon sees it.
//! - [`dirfd`]: file work as root through directory descriptors, never following links (I9).
//! - [`dropin`]: the text of the drop-in that points the Cells unit at its binary.
//! - [`error`]: typed errors, one per D-Bus error name of the contract.
//! - [`failpoint`]: named crash points for the recovery tests (cargo feature `failpoints`).
//! - `fuzzing`: fuzz targets and the drop-in oracle (cargo feature `fuzzing`, tests only).
//! - [`fcaps`]: file capabilities (the `security.capability` xattr), set and read through an fd.
//! - [`fleet`]: cluster updates through etcd: settings, keys, values; the etcd client (feature `fleet`).
//! - [`health`]: the health wait after a restart (the unit settles, the health URL answers).
//! - [`helper`]: helper processes with lesser rights (probe, network, the Cells user's files);
//!   their transient units in [`helper::unit`].
//! - [`host`]: the Cells user, binary and working directory, from the config and the unit.
//! - [`install`]: the atomic swap and the kept binaries for Rollback.
//! - [`license`]: the Enterprise license file.
//! - [`log`]: journal entries with fields under systemd, stderr otherwise.
//! - [`metrics`]: the Prometheus textfile for node_exporter.
//! - [`net`]: the download rules and the HTTP client the network helper uses.
//! - [`package`]: the two Cells packages and their one spelling.
//! - [`policy`]: which offered releases are allowed, and what `check --auto` may install.
//! - [`probe`]: ELF check and the `version` run of a Cells binary, in the probe helper.
//! - [`schedule`]: maintenance windows in a time zone (when `check --auto` may apply).
//! - [`settings`]: the update-server settings in force, and where each comes from.
//! - [`stage`]: download or copy into the staging area, verified while streaming.
//! - [`state`]: the persisted lifecycle state machine and the apply journal.
//! - [`systemd`]: unit and timer facts, reload and restart, over systemd's D-Bus API.
//! - [`text`]: outside text made inert before it reaches sd_notify, the journal or a terminal.
//! - [`trust`]: trusted keys (RSA PKCS#1/SPKI, EC P-256), checksum and signature checks.
//! - [`update_server`]: the Cells update-server protocol (wire types, check).
//! - [`unit_syntax`]: unit-file syntax as systemd reads it (the drop-in oracle, discovery).
//! - [`version`]: Cells version parsing, ordering and the no-downgrade floor.
//! - [`wire`]: the one text form on disk of each typed value (versions, digests, capabilities,
//!   packages).
pub mod cancel;
pub mod cells_config;
pub mod config;
pub mod contract;
pub mod daemon;
pub mod dirfd;
pub mod doctor;
pub mod dropin;
pub mod error;
pub mod failpoint;
pub mod fcaps;
pub mod fleet;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod health;
pub mod helper;
pub mod host;
pub mod install;
pub mod license;
pub mod log;
pub mod metrics;
pub mod net;
pub mod package;
pub mod policy;
pub mod probe;
pub mod schedule;
pub mod settings;
pub mod stage;
pub mod state;
pub mod systemd;
pub mod text;
pub mod trust;
pub mod unit_syntax;
pub mod update_server;
pub mod version;
pub mod wire;

pub use error::{Error, Result};
