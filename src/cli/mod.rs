//! The `cells-updater` command line: argument definitions and dispatch.

mod verify;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit status: the operation failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit status: usage error.
pub const EXIT_USAGE: u8 = 2;

/// Verifies, installs and rolls back Pydio Cells updates.
#[derive(Debug, Parser)]
#[command(name = "cells-updater", version, about, max_term_width = 100)]
pub struct Cli {
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
    /// Check a binary against the trusted keys, offline; no daemon needed.
    Verify(verify::VerifyArgs),
}

/// Parses the arguments and runs the command.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    let root = cli.root.clone().unwrap_or_else(|| PathBuf::from("/"));
    match cli.command {
        Command::Verify(args) => verify::run(&root, cli.config.as_deref(), &args),
    }
}

/// Prints a library error the way every command does: the D-Bus name, then the message.
pub fn report(err: &cells_updater::Error) -> ExitCode {
    eprintln!("cells-updater: {}: {}", err.dbus_name(), err.message());
    ExitCode::from(EXIT_FAILED)
}
