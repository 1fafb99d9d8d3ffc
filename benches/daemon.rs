//! Daemon benchmark: time from exec to READY=1 and idle RSS, on a private dbus-daemon.
//! READY=1 is caught on our own NOTIFY_SOCKET (exact, no polling). Baselines, same run:
//! `systemd-notify --ready --no-block` (the least a notifying process can do) and the RSS of the
//! dbus-daemon serving the bus.
//! Run: `cargo bench --bench daemon` (as root). Env: BENCH_RUNS (default 20).

#[path = "../tests/support/mod.rs"]
mod support;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};
use support::bus::PrivateBus;
use support::*;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Spawns `cmd` with NOTIFY_SOCKET pointing at a fresh socket; returns the time to READY=1
/// and the child.
fn time_to_ready(mut cmd: Command, sock_path: &std::path::Path) -> (Duration, std::process::Child) {
    let _ = std::fs::remove_file(sock_path);
    let sock = UnixDatagram::bind(sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let start = Instant::now();
    // Returned to the caller, which stops and waits for it.
    #[allow(clippy::zombie_processes)]
    let child = cmd.env("NOTIFY_SOCKET", sock_path).spawn().unwrap();
    let mut buf = [0u8; 4096];
    loop {
        let n = sock.recv(&mut buf).expect("READY=1 within 10 s");
        if String::from_utf8_lossy(&buf[..n])
            .lines()
            .any(|l| l == "READY=1")
        {
            return (start.elapsed(), child);
        }
    }
}

fn main() {
    let Some(runs) = support::bench_runs(20) else {
        return;
    };
    let env = StageEnv::new(&[&keys().rsa_pkcs1_pub]);
    env.write_daemon_config("");
    let bus = PrivateBus::start();
    let sock = env.root.path().join("notify.sock");

    let mut ours = Vec::new();
    let mut rss = Vec::new();
    for i in 0..runs {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cells-updater"));
        cmd.args(["--bus-address", &bus.address, "--root"])
            .arg(env.root.path())
            .arg("daemon");
        cmd.stderr(std::process::Stdio::null());
        let (t, mut child) = time_to_ready(cmd, &sock);
        ours.push(t);
        if i == 0 {
            // Idle: after READY it probes the installed binary once; then nothing happens.
            std::thread::sleep(Duration::from_secs(2));
            rss.push(rss_kib(child.id()));
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = child.wait();
    }
    let mut base = Vec::new();
    for _ in 0..runs {
        let mut cmd = Command::new("systemd-notify");
        cmd.args(["--ready", "--no-block"]);
        let (t, mut child) = time_to_ready(cmd, &sock);
        base.push(t);
        let _ = child.wait();
    }
    let bus_pid = Command::new("pgrep")
        .args(["-n", "-f", &format!("{}", bus.dir.path().display())])
        .output()
        .unwrap();
    let bus_rss = String::from_utf8_lossy(&bus_pid.stdout)
        .trim()
        .parse()
        .map(rss_kib)
        .unwrap_or(0);
    let (o, b) = (support::median(ours), support::median(base));
    let r = rss[0];
    println!("\ndaemon start-up and idle memory, {runs} runs, medians\n");
    println!("| measure | cells-updater | baseline | ratio |");
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| exec to READY=1 (ms) | {:.1} | {:.1} (systemd-notify --ready --no-block) | {:.1} |",
        o.as_secs_f64() * 1e3,
        b.as_secs_f64() * 1e3,
        o.as_secs_f64() / b.as_secs_f64()
    );
    println!(
        "| idle RSS (MiB) | {:.1} | {:.1} (the private dbus-daemon) | {:.1} |",
        r as f64 / 1024.0,
        bus_rss as f64 / 1024.0,
        r as f64 / bus_rss.max(1) as f64
    );
    println!(
        "\ntargets: READY <= 100 ms: {:.1} ms {}; idle RSS <= 12 MiB: {:.1} MiB {}",
        o.as_secs_f64() * 1e3,
        if o <= Duration::from_millis(100) {
            "MET"
        } else {
            "MISSED"
        },
        r as f64 / 1024.0,
        if r <= 12 * 1024 { "MET" } else { "MISSED" }
    );
}
