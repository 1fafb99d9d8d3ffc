//! Helper processes (privilege separation). What the root daemon must not do itself runs in a
//! separate process with fixed, lesser rights, and talks back through a pipe:
//! - `probe`: runs a Cells binary, passed as its standard input and executed from that
//!   descriptor, as a dynamic user without network, capabilities or new privileges;
//! - `fetch`, `check`, `http-get`: the network, as a dynamic user without capabilities;
//! - `license-read`, `license-write`, `cells-config`: the Cells user's own files, as that user.
//!
//! Under systemd each helper is a transient unit started over systemd's D-Bus API with fixed,
//! hard-coded properties (starting units is root-equivalent, so only these code paths do it,
//! and no property comes from a caller or the update server). Without systemd (tests on a
//! private bus, a workstation) a forked child drops to the same rights by hand. Both speak
//! the framed protocol of [`protocol`] on standard output; the helper side is [`child`].

pub mod child;
pub mod protocol;
pub mod request;
pub mod unit;

use crate::error::{Error, Result};
use protocol::Frame;
pub use request::{Call, Request};
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

/// Memory a helper may use.
const HELPER_MEMORY_MAX: u64 = 512 << 20;

/// How helpers are started.
#[derive(Clone, Debug)]
pub enum Runner {
    /// Transient units, through systemd on this system-bus connection.
    Systemd(zbus::Connection),
    /// Forked children of `exe` (this program: `/proc/self/exe` in the daemon, the built
    /// binary in library tests).
    Fork {
        /// The cells-updater executable.
        exe: PathBuf,
        /// Stand-in for `DynamicUser=yes` (`[daemon] probe_user`).
        user: String,
    },
}

/// The rights a helper runs with.
#[derive(Clone, Debug, PartialEq)]
pub enum Rights {
    /// A dynamic user, no capabilities, no network (the version probe).
    Sandbox,
    /// A dynamic user, no capabilities, the network without link-local and multicast
    /// addresses (update-server check, downloads, the HTTP health probe); without loopback
    /// either, unless `loopback` (a server, proxy or health URL on this host).
    Network {
        /// Loopback may be reached.
        loopback: bool,
    },
    /// The Cells service user and group, to read and write its own files; `rw` is the only
    /// directory it may write.
    CellsUser {
        /// `User=` of the Cells unit.
        user: String,
        /// Its group.
        group: String,
        /// The directory it may write, if any.
        rw: Option<PathBuf>,
    },
}

/// What a helper reads on its standard input.
#[derive(Debug)]
pub enum Input {
    /// A request document (JSON), written to a pipe.
    Json(Vec<u8>),
    /// A file (the probe: the binary to run).
    File(File),
}

/// One helper to run, as [`Request::into_task`] makes it from a typed request.
#[derive(Debug)]
struct Task {
    /// The `cells-updater internal` subcommand.
    pub command: &'static str,
    /// Its fixed arguments.
    pub args: Vec<String>,
    /// The rights it runs with.
    pub rights: Rights,
    /// Its standard input.
    pub input: Input,
    /// Longest it may run; it is stopped then.
    pub timeout: Duration,
    /// Extra environment (`NAME=value`; proxies for network helpers).
    pub env: Vec<String>,
    /// It streams bulk bytes back ([`Request::streams`]).
    pub streams: bool,
}

/// A started helper.
pub struct Running {
    out: tokio::net::unix::pipe::Receiver,
    deadline: Instant,
    what: String,
    stop: Option<Teardown>,
    feeder: Option<tokio::task::JoinHandle<()>>,
    /// Data buffers handed back, reused for the next data frames.
    spare: Vec<Vec<u8>>,
    /// Metadata frames read so far (bounded by [`MAX_META_FRAMES`]).
    metas: usize,
}

/// Most metadata frames one helper run may send. A genuine helper sends at most two (where
/// a download starts, and that it was interrupted); without a bound, a confused or hostile
/// helper could keep the daemon reading megabyte frames it ignores until the run's deadline.
pub const MAX_META_FRAMES: usize = 8;

/// Most buffers kept for reuse.
const SPARE_BUFFERS: usize = 4;

/// How a running helper is stopped: its transient unit, or the forked child.
enum Teardown {
    Unit(zbus::Connection, String),
    Child(tokio::process::Child),
}

/// The executable helpers run: this very program.
fn myself() -> Result<PathBuf> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::Internal(format!("cannot find this program: {e}")))?;
    // A package upgrade may have replaced the file under a running daemon.
    let s = exe.to_string_lossy();
    Ok(match s.strip_suffix(" (deleted)") {
        Some(p) => PathBuf::from(p),
        None => exe,
    })
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::Internal(format!("cannot make a pipe: {e}")))
}

/// Size asked for the helpers' output pipe.
const PIPE_SIZE: i32 = 1 << 20;

static SERIAL: AtomicU64 = AtomicU64::new(0);

impl Runner {
    /// Starts the helper for `request`; its output is read from the returned handle.
    pub async fn start(&self, request: impl Into<Request>) -> Result<Running> {
        let mut task = request.into().into_task()?;
        let (out_r, out_w) = pipe()?;
        // A download streams through this pipe: 1 MiB (the unprivileged limit, the default
        // `fs.pipe-max-size`) instead of 64 KiB lets each side do more per wake-up. Only a
        // hint: a smaller pipe works, slower. Other helpers say little; they keep 64 KiB.
        if task.streams {
            let _ = nix::fcntl::fcntl(&out_r, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
        }
        let input = std::mem::replace(&mut task.input, Input::Json(Vec::new()));
        let (stdin, feed) = match input {
            Input::File(f) => (OwnedFd::from(f), None),
            Input::Json(bytes) => {
                let (r, w) = pipe()?;
                (r, Some((w, bytes)))
            }
        };
        let what = format!("the {} helper", task.command);
        let stop = match self {
            Runner::Systemd(conn) => {
                let name = format!(
                    "cells-updater-{}-{}-{}.service",
                    task.command,
                    std::process::id(),
                    SERIAL.fetch_add(1, Ordering::Relaxed)
                );
                let mut argv = vec![
                    myself()?.to_string_lossy().to_string(),
                    "internal".to_string(),
                    task.command.to_string(),
                ];
                argv.extend(task.args.iter().cloned());
                let props = unit::TransientProps {
                    description: format!("cells-updater {} helper", task.command),
                    argv,
                    rights: task.rights.clone(),
                    stdin: stdin.as_fd(),
                    stdout: out_w.as_fd(),
                    runtime_max: task.timeout + Duration::from_secs(5),
                    memory_max: HELPER_MEMORY_MAX,
                    env: task.env.clone(),
                };
                unit::start_transient(conn, &name, &props).await?;
                Teardown::Unit(conn.clone(), name)
            }
            Runner::Fork { exe, user } => {
                let child = spawn_child(
                    &task,
                    exe,
                    user,
                    stdin,
                    out_w
                        .try_clone()
                        .map_err(|e| Error::Internal(format!("cannot duplicate a pipe: {e}")))?,
                )?;
                Teardown::Child(child)
            }
        };
        // Only the helper keeps the write end: its exit is our end of file.
        drop(out_w);
        let out = tokio::net::unix::pipe::Receiver::from_owned_fd(out_r)
            .map_err(|e| Error::Internal(format!("cannot read {what}: {e}")))?;
        let feeder = feed.map(|(w, bytes)| {
            tokio::spawn(async move {
                if let Ok(mut tx) = tokio::net::unix::pipe::Sender::from_owned_fd(w) {
                    let _ = tx.write_all(&bytes).await;
                }
            })
        });
        Ok(Running {
            out,
            deadline: Instant::now() + task.timeout,
            what,
            stop: Some(stop),
            feeder,
            spare: Vec::new(),
            metas: 0,
        })
    }

    /// Runs `call` to its typed reply (no data frames expected).
    pub async fn call<C: Call>(&self, call: C) -> Result<C::Reply> {
        let mut r = self.start(call).await?;
        match r.next().await? {
            Frame::Result(res) => r.reply(res?),
            Frame::Meta(_) | Frame::Data(_) => {
                Err(Error::Internal(format!("{} sent unexpected data", r.what)))
            }
        }
    }
}

impl Running {
    /// The helper's result read as its request's reply type.
    pub fn reply<T: serde::de::DeserializeOwned>(&self, value: serde_json::Value) -> Result<T> {
        serde_json::from_value(value)
            .map_err(|e| Error::Internal(format!("{} gave a malformed answer: {e}", self.what)))
    }

    /// The next frame; an error when the helper ends without a result or runs out of time.
    pub async fn next(&mut self) -> Result<Frame> {
        let read = protocol::read_frame(&mut self.out, self.spare.pop());
        match tokio::time::timeout_at(self.deadline, read).await {
            Err(_) => Err(Error::Internal(format!(
                "{} did not finish in time and was stopped",
                self.what
            ))),
            Ok(Err(e)) => Err(Error::Internal(format!("{}: {e}", self.what))),
            Ok(Ok(None)) => Err(Error::Internal(format!(
                "{} ended without a result (see journalctl -t cells-updater)",
                self.what
            ))),
            Ok(Ok(Some(protocol::Frame::Meta(m)))) => {
                self.metas += 1;
                if self.metas > MAX_META_FRAMES {
                    return Err(Error::Internal(format!(
                        "{} sent more than {MAX_META_FRAMES} metadata frames; it was stopped",
                        self.what
                    )));
                }
                Ok(protocol::Frame::Meta(m))
            }
            Ok(Ok(Some(f))) => Ok(f),
        }
    }

    /// Hands back a data frame's buffer once its bytes are used.
    pub fn give_back(&mut self, buf: Vec<u8>) {
        if self.spare.len() < SPARE_BUFFERS {
            self.spare.push(buf);
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(f) = self.feeder.take() {
            f.abort();
        }
        match self.stop.take() {
            Some(Teardown::Unit(conn, name)) => {
                // A finished unit is already gone; stopping it again is harmless.
                if let Ok(handle) = tokio::runtime::Handle::try_current() {
                    handle.spawn(async move {
                        unit::stop_transient(&conn, &name).await;
                    });
                }
            }
            Some(Teardown::Child(mut child)) => {
                if let Some(pid) = child.id() {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                let _ = child.start_kill();
                if let Ok(handle) = tokio::runtime::Handle::try_current() {
                    handle.spawn(async move {
                        let _ = child.wait().await;
                    });
                }
            }
            None => {}
        }
    }
}

/// Identity a forked helper switches to, resolved before fork (lookups are not fork-safe).
#[derive(Clone, Copy)]
struct Identity {
    uid: u32,
    gid: u32,
    /// The helper must have no network: a new network namespace.
    no_network: bool,
}

fn lookup(user: &str, group: Option<&str>) -> Result<(u32, u32)> {
    let pw = nix::unistd::User::from_name(user)
        .ok()
        .flatten()
        .ok_or_else(|| Error::Internal(format!("the user {user:?} does not exist")))?;
    let gid = match group.filter(|g| !g.is_empty()) {
        Some(g) => nix::unistd::Group::from_name(g)
            .ok()
            .flatten()
            .ok_or_else(|| Error::Internal(format!("the group {g:?} does not exist")))?
            .gid
            .as_raw(),
        None => pw.gid.as_raw(),
    };
    Ok((pw.uid.as_raw(), gid))
}

fn spawn_child(
    task: &Task,
    exe: &std::path::Path,
    stand_in: &str,
    stdin: OwnedFd,
    stdout: OwnedFd,
) -> Result<tokio::process::Child> {
    let root = nix::unistd::geteuid().is_root();
    let (uid, gid) = match &task.rights {
        Rights::Sandbox | Rights::Network { .. } => lookup(stand_in, None)?,
        Rights::CellsUser { user, group, .. } => lookup(user, Some(group))?,
    };
    // The daemon, as the child will see it as its parent.
    let parent = nix::unistd::getpid();
    if root && uid == 0 {
        return Err(Error::Internal(format!(
            "{} must not run as root; set [daemon] probe_user and the unit's User=",
            task.command
        )));
    }
    let id = Identity {
        uid,
        gid,
        no_network: task.rights == Rights::Sandbox,
    };
    // /proc/self/exe reaches this program whatever the permissions of its directories.
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg0("cells-updater")
        .arg("internal")
        .arg(task.command)
        .args(&task.args)
        .env_clear()
        .envs(task.env.iter().filter_map(|kv| kv.split_once('=')))
        .current_dir("/")
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    // SAFETY: the closure only makes async-signal-safe system calls and allocates nothing.
    unsafe {
        cmd.pre_exec(move || isolate(id, root, parent));
    }
    cmd.spawn()
        .map_err(|e| Error::Internal(format!("cannot start the {} helper: {e}", task.command)))
}

/// In the forked child, before exec: only 0-2 survive exec, no new privileges, the lesser
/// identity, and for the probe no network. nix's wrappers are thin system calls: no
/// allocation, async-signal-safe.
fn isolate(id: Identity, root: bool, parent: nix::unistd::Pid) -> std::io::Result<()> {
    use nix::sched::{unshare, CloneFlags};
    use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
    // Every descriptor but 0-2 closes at exec, whatever the daemon had open (received file
    // descriptors included). nix has no close_range wrapper.
    // SAFETY: a plain system call on this (child) process's descriptor table.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == -1 {
        return Err(std::io::Error::last_os_error());
    }
    // A session of its own, without a controlling terminal: a helper (or a binary it runs)
    // must not reach the terminal of the root shell that ran `doctor`, e.g. with TIOCSTI.
    // It is also its own process group, which the daemon kills as a whole.
    nix::unistd::setsid()?;
    nix::sys::prctl::set_no_new_privs()?;
    let isolated_net = CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET;
    if root {
        // With CAP_SYS_ADMIN a plain network namespace; otherwise one owned by a new user
        // namespace after the drop.
        let netns = id.no_network && unshare(CloneFlags::CLONE_NEWNET).is_ok();
        let (uid, gid) = (Uid::from_raw(id.uid), Gid::from_raw(id.gid));
        setgroups(&[gid])?;
        setresgid(gid, gid, gid)?;
        setresuid(uid, uid, uid)?;
        if id.no_network && !netns {
            unshare(isolated_net)?;
        }
    } else if id.no_network {
        unshare(isolated_net)?;
    }
    // After the identity change, which clears it; a daemon that died before this point is
    // seen through the parent that changed.
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
    if nix::unistd::getppid() != parent {
        return Err(std::io::Error::other("the daemon is gone"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A helper that sends metadata frame after metadata frame is stopped after
    /// [`MAX_META_FRAMES`], though each frame is small and the deadline is far.
    #[tokio::test]
    async fn metadata_frames_are_bounded_in_number() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let writer = std::thread::spawn(move || {
            let mut w = File::from(w);
            for i in 0..(MAX_META_FRAMES + 4) {
                if protocol::send_meta(&mut w, &serde_json::json!({ "n": i })).is_err() {
                    break;
                }
            }
        });
        let mut running = Running {
            out: tokio::net::unix::pipe::Receiver::from_owned_fd(r).unwrap(),
            deadline: Instant::now() + Duration::from_secs(60),
            what: "the test helper".into(),
            stop: None,
            feeder: None,
            spare: Vec::new(),
            metas: 0,
        };
        for _ in 0..MAX_META_FRAMES {
            assert!(matches!(running.next().await, Ok(Frame::Meta(_))));
        }
        let err = running.next().await.unwrap_err();
        assert!(
            err.message().contains("more than 8 metadata frames"),
            "{err}"
        );
        drop(running);
        writer.join().unwrap();
    }
}
