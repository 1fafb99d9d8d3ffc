//! Probing a Cells binary (invariant I3): its ELF header must match this machine, and run in
//! the probe helper (unprivileged, empty environment, no network, a timeout, capped output),
//! `version -f '{{.Version}}'` must print exactly the advertised version. The same probe tells
//! which version and edition the installed binary is.

use crate::error::{Error, Result};
pub use crate::helper::request::ProbeOutput;
use crate::helper::request::{Probe, PROBE_OUTPUT, PROBE_TIMEOUT};
use crate::helper::Runner;
use crate::text;
use crate::version::CellsVersion;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// This machine's ELF identity: class, data encoding, `e_machine`.
fn host_elf() -> (u8, u8, u16) {
    let class = if cfg!(target_pointer_width = "64") {
        2
    } else {
        1
    };
    let data = if cfg!(target_endian = "little") { 1 } else { 2 };
    let machine = if cfg!(target_arch = "x86_64") {
        62
    } else if cfg!(target_arch = "aarch64") {
        183
    } else if cfg!(target_arch = "x86") {
        3
    } else if cfg!(target_arch = "arm") {
        40
    } else if cfg!(target_arch = "riscv64") {
        243
    } else if cfg!(target_arch = "powerpc64") {
        21
    } else if cfg!(target_arch = "s390x") {
        22
    } else {
        0
    };
    (class, data, machine)
}

fn machine_name(m: u16) -> String {
    match m {
        3 => "x86 (386)".into(),
        40 => "arm".into(),
        62 => "x86-64 (amd64)".into(),
        183 => "aarch64 (arm64)".into(),
        243 => "riscv64".into(),
        21 => "ppc64".into(),
        22 => "s390x".into(),
        other => format!("machine {other}"),
    }
}

/// Checks the ELF header of `file` against this machine.
pub fn check_elf(file: &File) -> Result<()> {
    let mut h = [0u8; 20];
    let n = file
        .read_at(&mut h, 0)
        .map_err(|e| Error::WrongArchitecture(format!("cannot read the binary's header: {e}")))?;
    check_elf_header(&h[..n])
}

/// The check of [`check_elf`] on the first bytes of a file (20 are enough).
pub fn check_elf_header(h: &[u8]) -> Result<()> {
    if h.len() < 20 || h[..4] != *b"\x7fELF" {
        return Err(Error::WrongArchitecture(
            "the file is not an ELF executable, so it cannot be a Cells binary for Linux; \
             check the release you asked for"
                .into(),
        ));
    }
    let (class, data, machine) = host_elf();
    let file_machine = if h[5] == 1 {
        u16::from_le_bytes([h[18], h[19]])
    } else {
        u16::from_be_bytes([h[18], h[19]])
    };
    let e_type = if h[5] == 1 {
        u16::from_le_bytes([h[16], h[17]])
    } else {
        u16::from_be_bytes([h[16], h[17]])
    };
    if h[4] != class || h[5] != data || file_machine != machine {
        return Err(Error::WrongArchitecture(format!(
            "the binary is built for {} ({}-bit, {}), this machine is {}; download the build for \
             this machine's architecture",
            machine_name(file_machine),
            if h[4] == 2 { 64 } else { 32 },
            if h[5] == 1 {
                "little-endian"
            } else {
                "big-endian"
            },
            machine_name(machine)
        )));
    }
    if e_type != 2 && e_type != 3 {
        return Err(Error::WrongArchitecture(format!(
            "the ELF file is not an executable (e_type {e_type})"
        )));
    }
    Ok(())
}

/// Runs the binary open as `file` with `args` in the probe helper (a dynamic user with no
/// network under systemd; see [`crate::helper`]). The binary is passed as a descriptor and
/// executed from it: nothing is re-opened by path, and the staging directory stays root-only.
pub async fn run(runner: &Runner, file: &File, args: &[&str]) -> Result<ProbeOutput> {
    let dup = file
        .try_clone()
        .map_err(|e| Error::VersionMismatch(format!("cannot pass the binary to the probe: {e}")))?;
    runner
        .call(Probe {
            binary: dup,
            args: args.iter().map(|a| a.to_string()).collect(),
        })
        .await
}

/// Helper side (`probe`): runs the binary given as standard input (executed from that
/// descriptor) with `args`, an empty environment, no input, a timeout and capped output.
/// Reports its exit status and what it printed.
pub fn helper(args: &[String]) -> Result<ProbeOutput> {
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
    let text = |b: &[u8]| String::from_utf8_lossy(&b[..b.len().min(PROBE_OUTPUT)]).to_string();
    Ok(ProbeOutput {
        code: status.code(),
        stdout: text(&stdout),
        truncated: stdout.len() > PROBE_OUTPUT,
        stderr: text(&stderr),
    })
}

/// Runs `version -f '{{.Version}}'` of the binary open as `file`; returns what it printed.
pub async fn report_version(runner: &Runner, file: &File) -> Result<String> {
    let out = run(runner, file, &["version", "-f", "{{.Version}}"]).await?;
    if out.truncated {
        return Err(Error::VersionMismatch(format!(
            "the binary printed more than {} bytes for `version`; it is not a Cells binary",
            PROBE_OUTPUT
        )));
    }
    if out.code != Some(0) {
        return Err(Error::VersionMismatch(format!(
            "the binary's `version` failed ({}): {}",
            out.code
                .map_or("killed".to_string(), |c| format!("exit code {c}")),
            text::one_line(out.stderr.trim(), 300)
        )));
    }
    Ok(out.stdout.trim().to_string())
}

/// The edition label: `version -f '{{.PackageLabel}}'`, else the first line of `version`;
/// `""` when neither says anything.
pub async fn report_label(runner: &Runner, file: &File) -> Result<String> {
    let out = run(runner, file, &["version", "-f", "{{.PackageLabel}}"]).await?;
    let label = out.stdout.trim();
    if out.code == Some(0) && !label.is_empty() && !out.truncated {
        return Ok(text::one_line(label, 200));
    }
    let out = run(runner, file, &["version"]).await?;
    Ok(out
        .stdout
        .lines()
        .next()
        .map(|l| text::one_line(l.trim(), 200))
        .unwrap_or_default())
}

/// Checks the ELF header of `file`, then that it reports exactly `expected`.
pub async fn check_version(runner: &Runner, file: &File, expected: &CellsVersion) -> Result<()> {
    check_elf(file)?;
    let reported = report_version(runner, file).await?;
    let shown = text::one_line(&reported, 100);
    let parsed = CellsVersion::parse(&reported).map_err(|_| {
        Error::VersionMismatch(format!(
            "the binary reports {shown:?}, not a version; it is not the advertised Cells \
             {expected}"
        ))
    })?;
    if parsed != *expected {
        return Err(Error::VersionMismatch(format!(
            "the binary reports version {shown} but {expected} was advertised; an old \
             signed binary may be served under a new version number, so it is refused"
        )));
    }
    Ok(())
}

/// Whether an edition label names the Enterprise edition (Cells' own rule: the label of an
/// Enterprise build contains "Enterprise").
pub fn label_is_enterprise(label: &str) -> bool {
    label.contains("Enterprise")
}

/// Checks, before the swap, that `file` is the edition `package` asks for: a genuine binary
/// of the other edition never runs on this host's data. A binary whose label says nothing
/// passes (Cells' rule: the label alone never fails the check).
pub async fn check_edition(
    runner: &Runner,
    file: &File,
    package: crate::package::Package,
) -> Result<()> {
    let label = report_label(runner, file).await?;
    if label.is_empty()
        || label_is_enterprise(&label) == (package == crate::package::Package::Enterprise)
    {
        return Ok(());
    }
    Err(Error::VersionMismatch(format!(
        "the binary says it is {label:?}, not the {package} edition that was advertised; a \
         genuinely signed binary of the other edition is refused before it runs here"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn temp_with(bytes: &[u8]) -> File {
        let path = std::env::temp_dir().join(format!(
            "cu-elf-{}-{}",
            std::process::id(),
            bytes.len() + bytes.first().copied().unwrap_or(0) as usize
        ));
        let mut f = File::create(&path).unwrap();
        f.write_all(bytes).unwrap();
        let f = File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    }

    #[test]
    fn own_executable_matches_this_machine() {
        let me = File::open(std::env::current_exe().unwrap()).unwrap();
        check_elf(&me).unwrap();
    }

    #[test]
    fn foreign_and_non_elf_are_refused() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let mut other = me[..64].to_vec();
        other[18] = 0x28; // EM_ARM
        other[19] = 0;
        let err = check_elf(&temp_with(&other)).unwrap_err();
        assert_eq!(err.name(), "WrongArchitecture");
        assert!(err.message().contains("arm"), "{err}");
        let err = check_elf(&temp_with(b"#!/bin/sh\necho 4.4.5\n")).unwrap_err();
        assert!(err.message().contains("not an ELF"), "{err}");
    }
}
