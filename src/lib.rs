//! cells-updater: the privileged half of updating Pydio Cells.
//!
//! Modules, one responsibility each:
//! - [`config`]: `/etc/cells-updater/config.toml` + `config.d/*.toml`, defaults, root prefix.
//! - [`daemon`]: the bus name, Manager and Job objects, authorization, jobs, sd-notify, idle exit.
//! - [`error`]: typed errors, one per D-Bus error name of the contract.
//! - [`failpoint`]: named crash points for the recovery tests (cargo feature `failpoints`).
//! - [`fcaps`]: file capabilities (the `security.capability` xattr), set and read through an fd.
//! - [`install`]: the atomic swap and the kept binaries for Rollback.
//! - [`license`]: the Enterprise license file.
//! - [`log`]: journal entries with fields under systemd, stderr otherwise.
//! - [`policy`]: which offered releases are allowed, and what `check --auto` may install.
//! - [`probe`]: ELF check and the isolated `version` run of a staged binary.
//! - [`stage`]: download or copy into the staging area, verified while streaming.
//! - [`state`]: the persisted lifecycle state machine and the apply journal.
//! - [`systemd`]: unit facts, restart and health, drop-ins, over systemd's D-Bus API.
//! - [`trust`]: trusted keys (RSA PKCS#1/SPKI, EC P-256), checksum and signature checks.
//! - [`update_server`]: the Cells update-server client (wire types, check).
//! - [`version`]: Cells version parsing, ordering and the no-downgrade floor.
pub mod config;
pub mod daemon;
pub mod error;
pub mod failpoint;
pub mod fcaps;
pub mod install;
pub mod license;
pub mod log;
pub mod policy;
pub mod probe;
pub mod stage;
pub mod state;
pub mod systemd;
pub mod trust;
pub mod update_server;
pub mod version;

pub use error::{Error, Result};
