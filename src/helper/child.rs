//! The helper side: `cells-updater internal <command>`, started by the daemon (see the module
//! above) with lesser rights. It reads its request from standard input, does one thing, and
//! answers in frames on standard output. This is only the router, above the operations it
//! routes to: each operation's helper half lives beside its daemon half (`net`, `license`,
//! `cells_config`, `probe`), and both speak the payload types of [`super::request`]. Nothing
//! there trusts the request more than the daemon's own checks: URLs are checked again, sizes
//! and times are bounded again.

use super::protocol;
use super::request::command;
use crate::error::{Error, Result};
use crate::net;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::process::ExitCode;

/// Largest request document read from standard input.
const MAX_REQUEST: u64 = 1 << 20;

/// Runs helper `command`; the exit status says only whether a result was sent.
pub fn main(command: &str, args: &[String]) -> ExitCode {
    // Frames go to the pipe as written: not through `Stdout`'s line buffer, which would split
    // a binary frame at each newline byte into several writes.
    let mut out = match std::io::stdout().as_fd().try_clone_to_owned() {
        Ok(fd) => std::fs::File::from(fd),
        Err(_) => return ExitCode::FAILURE,
    };
    let result = match command {
        command::PROBE => crate::probe::helper(args).and_then(reply),
        other => match read_request() {
            Ok(req) => dispatch(other, req, &mut out),
            Err(e) => Err(e),
        },
    };
    match protocol::send_result(&mut out, &result) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

fn read_request() -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_REQUEST)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::Internal(format!("cannot read the request: {e}")))?;
    Ok(bytes)
}

fn parse<T: for<'de> Deserialize<'de>>(req: &[u8]) -> Result<T> {
    serde_json::from_slice(req).map_err(|e| Error::Internal(format!("malformed request: {e}")))
}

fn reply<T: Serialize>(r: T) -> Result<serde_json::Value> {
    serde_json::to_value(r).map_err(|e| Error::Internal(format!("cannot encode the reply: {e}")))
}

fn dispatch(command: &str, req: Vec<u8>, out: &mut impl Write) -> Result<serde_json::Value> {
    match command {
        command::FETCH => reply(net::run_blocking(net::fetch(parse(&req)?, out))?),
        command::CHECK => reply(net::run_blocking(net::post_check(parse(&req)?, out))?),
        command::HTTP_GET => reply(net::run_blocking(net::http_get(parse(&req)?))?),
        command::LICENSE_READ => reply(crate::license::read_as_user(parse(&req)?)?),
        command::LICENSE_WRITE => reply(crate::license::write_as_user(parse(&req)?)?),
        command::CELLS_CONFIG => reply(crate::cells_config::read_as_user(parse(&req)?)?),
        other => Err(Error::Internal(format!("no helper command {other:?}"))),
    }
}
