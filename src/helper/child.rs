//! The helper side: `cells-updater internal <command>`, started by the daemon (see the module
//! above) with lesser rights. It reads its request from standard input, does one thing, and
//! answers in frames on standard output. Nothing here trusts the request more than the
//! daemon's own checks: URLs are checked again, sizes and times are bounded again.

use super::protocol;
use crate::error::{Error, Result};
use crate::net;
use serde::Deserialize;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd};
use std::os::unix::process::CommandExt;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

/// Largest request document read from standard input.
const MAX_REQUEST: u64 = 1 << 20;
/// Most bytes of the probed binary's output kept.
pub const PROBE_OUTPUT: usize = 4096;
/// Longest a probed binary may run.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs helper `command`; the exit status says only whether a result was sent.
pub fn main(command: &str, args: &[String]) -> ExitCode {
    // Frames go to the pipe as written: not through `Stdout`'s line buffer, which would split
    // a binary frame at each newline byte into several writes.
    let mut out = match std::io::stdout().as_fd().try_clone_to_owned() {
        Ok(fd) => std::fs::File::from(fd),
        Err(_) => return ExitCode::FAILURE,
    };
    let result = match command {
        "probe" => probe(args),
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

fn read_request() -> Result<serde_json::Value> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_REQUEST)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::InvalidArgument(format!("cannot read the request: {e}")))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::InvalidArgument(format!("malformed request: {e}")))
}

fn parse<T: for<'de> Deserialize<'de>>(req: serde_json::Value) -> Result<T> {
    serde_json::from_value(req)
        .map_err(|e| Error::InvalidArgument(format!("malformed request: {e}")))
}

fn dispatch(
    command: &str,
    req: serde_json::Value,
    out: &mut impl Write,
) -> Result<serde_json::Value> {
    match command {
        "fetch" => net::run_blocking(net::fetch(parse(req)?, out)),
        "check" => net::run_blocking(net::post_check(parse(req)?, out)),
        "http-get" => net::run_blocking(net::http_get(parse(req)?)),
        "license-read" => license_read(parse(req)?),
        "license-write" => license_write(parse(req)?),
        "cells-config" => crate::cells_config::read_as_user(parse(req)?),
        other => Err(Error::InvalidArgument(format!(
            "no helper command {other:?}"
        ))),
    }
}

/// Runs the binary given as standard input (executed from that descriptor) with `args`, an
/// empty environment, no input, a timeout and capped output. Reports its exit status and
/// what it printed.
fn probe(args: &[String]) -> Result<serde_json::Value> {
    let fail = |what: &str, e: std::io::Error| {
        Error::VersionMismatch(format!("the version probe could not {what}: {e}"))
    };
    // The binary arrives as fd 0: move it aside (close-on-exec) so the probed program gets
    // an empty standard input. An ELF file runs from a close-on-exec descriptor.
    let bin = nix::fcntl::fcntl(std::io::stdin(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3))
        .map_err(|e| fail("take the binary", e.into()))?;
    // SAFETY: F_DUPFD_CLOEXEC returned a fresh descriptor that nothing else owns.
    let bin = unsafe { std::fs::File::from_raw_fd(bin) };
    let start = Instant::now();
    let mut child = std::process::Command::new(format!("/proc/self/fd/{}", bin.as_raw_fd()))
        .arg0("cells")
        .args(args)
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| fail("run the binary", e))?;
    drop(bin);
    let capped = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(r) = r {
                let _ = r.take(PROBE_OUTPUT as u64 + 1).read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = capped(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let err = capped(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if start.elapsed() < PROBE_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(10))
            }
            _ => break None,
        }
    };
    // Nothing the probed binary started may outlive the probe.
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = child.kill();
    let _ = child.wait();
    let Some(status) = status else {
        return Err(Error::VersionMismatch(format!(
            "the binary did not answer `{}` within {} s; it is not a working Cells binary",
            args.first().map_or("", String::as_str),
            PROBE_TIMEOUT.as_secs()
        )));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    Ok(serde_json::json!({
        "code": status.code(),
        "stdout": String::from_utf8_lossy(&stdout[..stdout.len().min(PROBE_OUTPUT)]),
        "truncated": stdout.len() > PROBE_OUTPUT,
        "stderr": String::from_utf8_lossy(&stderr[..stderr.len().min(PROBE_OUTPUT)]),
    }))
}

/// `license-read`: the key in `<dir>/pydio-license`, read with the Cells user's rights.
#[derive(Deserialize)]
struct LicenseRead {
    dir: String,
}

/// `license-write`: the key to put in `<dir>/pydio-license`.
#[derive(Deserialize)]
struct LicenseWrite {
    dir: String,
    key: String,
}

fn open_own_dir(dir: &str) -> Result<crate::dirfd::Dir> {
    crate::dirfd::Dir::open_own(std::path::Path::new(dir)).map_err(|e| {
        Error::InvalidArgument(format!(
            "the Cells working directory {dir} cannot be opened as the Cells user ({e}); start \
             Cells once, or set CELLS_WORKING_DIR in its unit"
        ))
    })
}

fn license_read(req: LicenseRead) -> Result<serde_json::Value> {
    let dir = open_own_dir(&req.dir)?;
    let me = nix::unistd::geteuid().as_raw();
    let name = crate::license::LICENSE_FILE;
    let opened = match dir.open_file(name) {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(serde_json::json!({ "key": null }))
        }
        Err(e) => {
            return Err(Error::LicenseRejected(format!(
                "the license file {dir}/{name} cannot be used: {e}; replace it with \
                 `cells-updater license install`",
                dir = req.dir
            )))
        }
    };
    if opened.stat.st_uid != me {
        return Err(Error::LicenseRejected(format!(
            "the license file {}/{name} does not belong to the Cells user; replace it with \
             `cells-updater license install`",
            req.dir
        )));
    }
    let mut bytes = Vec::new();
    opened
        .file
        .take(crate::license::MAX_KEY as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::LicenseRejected(format!("cannot read the license file: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|_| {
        Error::LicenseRejected("the license file is not text; install the key again".into())
    })?;
    let key = crate::license::validate(&text).map_err(|e| Error::LicenseRejected(e.message()))?;
    Ok(serde_json::json!({ "key": key }))
}

fn license_write(req: LicenseWrite) -> Result<serde_json::Value> {
    let key = crate::license::validate(&req.key)?;
    let dir = open_own_dir(&req.dir)?;
    dir.write_atomic(crate::license::LICENSE_FILE, key.as_bytes(), 0o600)
        .map_err(|e| Error::from_io(&e, "cannot write the license file", Error::InvalidArgument))?;
    Ok(
        serde_json::json!({ "path": format!("{}/{}", req.dir.trim_end_matches('/'), crate::license::LICENSE_FILE) }),
    )
}
