//! Probing a staged binary before it may be installed (invariant I3): its ELF header must
//! match this machine, and run unprivileged, with an empty environment, no network and a
//! timeout, `version -f '{{.Version}}'` must print exactly the advertised version.

use crate::error::{Error, Result};
use crate::version::CellsVersion;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// How the version probe runs.
#[derive(Debug, Clone)]
pub struct ProbeSettings {
    /// Unprivileged user the probe runs as (when the daemon is root).
    pub user: String,
    /// Longest the probe may run.
    pub timeout: Duration,
    /// Most bytes of output read.
    pub max_output: usize,
}

impl Default for ProbeSettings {
    fn default() -> Self {
        ProbeSettings {
            user: "nobody".into(),
            timeout: Duration::from_secs(10),
            max_output: 4096,
        }
    }
}

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
    if n < h.len() || h[..4] != *b"\x7fELF" {
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

/// Runs the binary open as `file` with `version -f '{{.Version}}'` and checks it reports
/// `expected`. The binary is executed through its descriptor (`/proc/self/fd/N`), so the
/// staging directory can stay root-only and nothing is re-opened by path.
pub async fn check_version(
    file: &File,
    expected: &CellsVersion,
    settings: &ProbeSettings,
) -> Result<()> {
    check_elf(file)?;
    let reported = report_version(file, settings).await?;
    let parsed = CellsVersion::parse(&reported).map_err(|_| {
        Error::VersionMismatch(format!(
            "the binary reports {reported:?}, not a version; it is not the advertised Cells \
             {expected}"
        ))
    })?;
    if parsed != *expected || reported.trim_start_matches('v') != expected.to_string() {
        return Err(Error::VersionMismatch(format!(
            "the binary reports version {reported} but {expected} was advertised; an old \
             signed binary may be served under a new version number, so it is refused"
        )));
    }
    Ok(())
}

/// Identity the probe switches to (resolved before fork: lookups are not fork-safe).
#[derive(Clone, Copy)]
enum Isolation {
    /// Running as root: new network namespace, then drop to uid/gid.
    DropTo(libc::uid_t, libc::gid_t),
    /// Running unprivileged: new user + network namespace.
    UserNs,
}

/// Runs `version -f '{{.Version}}'` of the binary open as `file`, isolated; returns what it printed.
pub async fn report_version(file: &File, settings: &ProbeSettings) -> Result<String> {
    let isolation = if nix::unistd::geteuid().is_root() {
        let user = nix::unistd::User::from_name(&settings.user)
            .ok()
            .flatten()
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "the probe user {:?} does not exist; set [daemon] probe_user",
                    settings.user
                ))
            })?;
        if user.uid.is_root() {
            return Err(Error::InvalidArgument(
                "the probe user must not be root; set [daemon] probe_user".into(),
            ));
        }
        Isolation::DropTo(user.uid.as_raw(), user.gid.as_raw())
    } else {
        Isolation::UserNs
    };
    let exe = format!("/proc/self/fd/{}", file.as_raw_fd());
    let mut cmd = tokio::process::Command::new(&exe);
    cmd.arg0("cells")
        .args(["version", "-f", "{{.Version}}"])
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: the closure only makes async-signal-safe system calls (unshare, prctl,
    // setgroups, setresgid, setresuid) and allocates nothing.
    unsafe {
        cmd.pre_exec(move || isolate(isolation));
    }
    let mut child = cmd.spawn().map_err(|e| {
        Error::VersionMismatch(format!("cannot run the binary's `version` command: {e}"))
    })?;
    let pid = child.id();
    let (Some(mut out), Some(mut err)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(Error::VersionMismatch("probe pipes missing".into()));
    };
    let cap = settings.max_output as u64;
    let work = async {
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let mut out_limited = (&mut out).take(cap + 1);
        let mut err_limited = (&mut err).take(cap);
        let (a, b, status) = tokio::join!(
            out_limited.read_to_end(&mut stdout),
            err_limited.read_to_end(&mut stderr),
            child.wait()
        );
        a.and(b).and(status.map(|s| (s, stdout, stderr)))
    };
    let result = tokio::time::timeout(settings.timeout, work).await;
    // Whatever happened, nothing the probe started may outlive it.
    if let Some(pid) = pid {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let (status, stdout, stderr) = match result {
        Err(_) => {
            return Err(Error::VersionMismatch(format!(
                "the binary did not answer `version` within {} s; it is not a working \
                 Cells binary",
                settings.timeout.as_secs()
            )))
        }
        Ok(Err(e)) => {
            return Err(Error::VersionMismatch(format!(
                "the version probe failed: {e}"
            )))
        }
        Ok(Ok(r)) => r,
    };
    if stdout.len() as u64 > cap {
        return Err(Error::VersionMismatch(format!(
            "the staged binary printed more than {cap} bytes for `version`; it is not a Cells binary"
        )));
    }
    if !status.success() {
        let detail = String::from_utf8_lossy(&stderr);
        return Err(Error::VersionMismatch(format!(
            "the staged binary's `version` failed ({status}): {}",
            detail.trim()
        )));
    }
    Ok(String::from_utf8_lossy(&stdout).trim().to_string())
}

fn isolate(isolation: Isolation) -> std::io::Result<()> {
    let check = |r: libc::c_int| {
        if r == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    // SAFETY: plain system calls on this (child) process.
    unsafe {
        check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0))?;
        // No setuid bit or file capability of the probed binary may grant anything.
        check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
        match isolation {
            Isolation::DropTo(uid, gid) => {
                // With CAP_SYS_ADMIN a plain network namespace; without it (the hardened unit
                // does not grant it) drop first, then a user + network namespace, which needs
                // no capability.
                let netns = libc::unshare(libc::CLONE_NEWNET) == 0;
                check(libc::setgroups(0, std::ptr::null()))?;
                check(libc::setresgid(gid, gid, gid))?;
                check(libc::setresuid(uid, uid, uid))?;
                if !netns {
                    check(libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET))?;
                }
            }
            Isolation::UserNs => {
                check(libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET))?;
            }
        }
    }
    Ok(())
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
