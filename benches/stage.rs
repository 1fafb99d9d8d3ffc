//! Staging benchmark: stage a 512 MiB signed binary from a loopback HTTP server, and in the
//! same run measure the baselines on the same file and server:
//!   curl -o; openssl dgst -sha256; curl + sha256sum + openssl dgst -verify.
//! Each command runs as a child process; wall time and peak RSS come from wait4(2) (which
//! folds in the descendants it waited for: the network and probe helpers).
//! Run: `cargo bench --bench stage` (as root: the probe drops to `nobody`).
//! Env: BENCH_MIB (default 512), BENCH_RUNS (default 3).

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

struct Measure {
    wall: Duration,
    /// User + system CPU time of the command and the descendants it waited for.
    cpu: Duration,
    max_rss_kib: i64,
}

fn measure(cmd: &mut Command) -> Measure {
    // Force fork (not vfork/posix_spawn): with a shared address space the child's exec would
    // inherit this process's RSS high-water mark into its own ru_maxrss.
    // SAFETY: the closure does nothing.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(cmd, || Ok(()));
    }
    let start = Instant::now();
    // Reaped by wait4 below, which also gives its rusage.
    #[allow(clippy::zombie_processes)]
    let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut status = 0;
    // SAFETY: rusage is plain data, filled by the kernel.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    // SAFETY: waiting for our own child.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    assert_eq!(r, pid, "wait4");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{cmd:?} failed ({status})"
    );
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Measure {
        wall,
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        max_rss_kib: usage.ru_maxrss,
    }
}

fn median(cmd: impl Fn() -> Command, before: impl Fn(), runs: usize) -> Measure {
    let mut all: Vec<Measure> = (0..runs)
        .map(|_| {
            before();
            measure(&mut cmd())
        })
        .collect();
    all.sort_by_key(|m| m.wall);
    let rss = all.iter().map(|m| m.max_rss_kib).max().unwrap_or(0);
    let mid = all.swap_remove(all.len() / 2);
    Measure {
        wall: mid.wall,
        cpu: mid.cpu,
        max_rss_kib: rss,
    }
}

fn child_stage() {
    use cells_updater::stage::{Cancel, Release, Stager, StagingArea};
    use cells_updater::trust::{decode_b64, decode_checksum, TrustedKeys};
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k}"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let state = cells_updater::dirfd::root_dir(
            Path::new(&var("BENCH_STATE")),
            Some(0o700),
            cells_updater::Error::SwapFailed,
        )
        .unwrap();
        let url = reqwest::Url::parse(&var("BENCH_URL")).unwrap();
        // The production path: bytes from the network helper through a pipe.
        let stager = Stager {
            area: StagingArea::open(&state).unwrap(),
            keys: TrustedKeys::load_files(&[PathBuf::from(var("BENCH_KEY"))]).unwrap(),
            runner: fork_runner(),
            max_binary_size: 1 << 30,
            min_rate: 64 << 10,
            min_deadline: Duration::from_secs(60),
            window_rate: 32 << 10,
            rate_window: Duration::from_secs(60),
        };
        let server = cells_updater::update_server::ServerSettings {
            url: format!("{}/", url.origin().ascii_serialization()),
            timeout: Duration::from_secs(30),
            proxy: Default::default(),
            download_hosts: Vec::new(),
        };
        let release = Release {
            version: cells_updater::version::CellsVersion::parse("9.9.9").unwrap(),
            package: cells_updater::package::Package::Home,
            url,
            checksum: decode_checksum(&var("BENCH_SUM")).unwrap(),
            signature: decode_b64("sig", &var("BENCH_SIG")).unwrap(),
            size: var("BENCH_SIZE").parse().unwrap(),
        };
        // Phase times, for BENCH_PHASES: process start to the first byte, the last byte,
        // verification (the fsync lies before it) and the probe; then the end.
        let t0 = std::time::Instant::now();
        let mut marks: Vec<(&'static str, Duration)> = Vec::new();
        let mut seen_first = false;
        stager
            .stage_release(
                &server,
                &release,
                &Default::default(),
                &mut |p| {
                    use cells_updater::stage::StagePhase;
                    let at = t0.elapsed();
                    match p.phase {
                        StagePhase::Downloading if p.done > 0 && !seen_first => {
                            seen_first = true;
                            marks.push(("first byte", at));
                        }
                        StagePhase::Downloading if p.done == p.total => {
                            marks.push(("last byte", at))
                        }
                        StagePhase::Verifying => marks.push(("fsync'd, verifying", at)),
                        StagePhase::Probing => marks.push(("probing", at)),
                        _ => {}
                    }
                },
                &Cancel::new(),
            )
            .await
            .expect("stage");
        marks.push(("staged", t0.elapsed()));
        if let Some(path) = std::env::var_os("BENCH_PHASES") {
            let line: Vec<String> = marks
                .iter()
                .map(|(n, d)| format!("{n} {:.3}", d.as_secs_f64()))
                .collect();
            let _ = std::fs::write(path, line.join(", "));
        }
    });
}

/// Serves BENCH_SERVE (a file) from a process of its own, so the bench process that forks
/// the measured commands never holds the binary in memory. Prints the URL; exits on stdin EOF.
fn child_serve(file: &Path) {
    let server = TestServer::start();
    server.put_binary("cells", std::fs::read(file).unwrap(), Delivery::Normal);
    println!("{}", server.binary_url("cells"));
    let mut sink = String::new();
    let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut sink);
}

fn main() {
    if std::env::var_os("BENCH_CHILD").is_some() {
        return child_stage();
    }
    if let Some(file) = std::env::var_os("BENCH_SERVE") {
        return child_serve(Path::new(&file));
    }
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` compatibility
    }
    let mib: usize = std::env::var("BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let dir = scratch().join("bench");
    std::fs::create_dir_all(&dir).unwrap();

    // A fake Cells padded with pseudo-random bytes (an ELF runs with trailing data), written
    // in pieces so this process stays small.
    let target = mib << 20;
    let file = dir.join("cells-9.9.9");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        let head = fake_cells("9.9.9", "ok");
        f.write_all(&head).unwrap();
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let mut left = target - head.len();
        while left > 0 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = x.to_le_bytes();
            let n = left.min(8);
            f.write_all(&b[..n]).unwrap();
            left -= n;
        }
    }
    let k = keys();
    let sig_file = dir.join("sig.bin");
    let digest = Command::new("openssl")
        .args(["dgst", "-sha256", "-binary"])
        .arg(&file)
        .output()
        .unwrap()
        .stdout;
    let st = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(&k.rsa)
        .arg("-out")
        .arg(&sig_file)
        .arg(&file)
        .status()
        .unwrap();
    assert!(st.success() && digest.len() == 32, "openssl signing failed");
    let (sum, sig) = {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        (
            b64.encode(&digest),
            b64.encode(std::fs::read(&sig_file).unwrap()),
        )
    };
    let mut server = Command::new(std::env::current_exe().unwrap())
        .env("BENCH_SERVE", &file)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let url = {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(server.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        line.trim().to_string()
    };
    let out = dir.join("download");
    let state = dir.join("state");
    let clean = || {
        let _ = std::fs::remove_file(&out);
        let _ = std::fs::remove_dir_all(&state);
    };

    let curl = median(
        || {
            let mut c = Command::new("curl");
            c.args(["-sSf", "-o"]).arg(&out).arg(&url);
            c
        },
        clean,
        runs,
    );
    let sha = median(
        || {
            let mut c = Command::new("openssl");
            c.args(["dgst", "-sha256"])
                .arg(&file)
                .stdout(std::process::Stdio::null());
            c
        },
        || {},
        runs,
    );
    let pipeline = median(
        || {
            let mut c = Command::new("sh");
            c.arg("-c").arg(format!(
                "curl -sSf -o {o} {url} && sha256sum {o} >/dev/null && openssl dgst -sha256 -verify {k} -signature {s} {o} >/dev/null",
                o = out.display(), k = k.rsa_spki_pub.display(), s = sig_file.display()
            ));
            c
        },
        clean,
        runs,
    );
    let ours = median(
        || {
            let mut c = Command::new(std::env::current_exe().unwrap());
            c.env("BENCH_CHILD", "1")
                .env("BENCH_STATE", &state)
                .env("BENCH_KEY", &k.rsa_pkcs1_pub)
                .env("BENCH_URL", &url)
                .env("BENCH_SUM", &sum)
                .env("BENCH_SIG", &sig)
                .env("BENCH_SIZE", target.to_string())
                .env("BENCH_PHASES", dir.join("phases"));
            c
        },
        clean,
        runs,
    );
    let phases = std::fs::read_to_string(dir.join("phases")).unwrap_or_default();
    clean();
    drop(server.stdin.take());
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);

    let base = curl.wall.max(sha.wall);
    println!("\nstaging {mib} MiB from loopback, median of {runs} runs (peak RSS: max of runs)\n");
    println!("| command | wall s | CPU s | peak RSS MiB | wall / max(curl, sha256) |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (name, m) in [
        ("curl -o", &curl),
        ("openssl dgst -sha256", &sha),
        ("curl + sha256sum + openssl dgst -verify", &pipeline),
        (
            "cells-updater stage (helper download+pipe+hash+verify+fsync+probe)",
            &ours,
        ),
    ] {
        println!(
            "| {name} | {:.2} | {:.2} | {:.1} | {:.2} |",
            m.wall.as_secs_f64(),
            m.cpu.as_secs_f64(),
            m.max_rss_kib as f64 / 1024.0,
            m.wall.as_secs_f64() / base.as_secs_f64()
        );
    }
    println!("\ncells-updater stage, last run, seconds from its start: {phases}");
    println!(
        "\ntargets: wall <= 1.2 x max(curl, openssl sha256): {:.2}x {}; peak RSS <= 24 MiB: {:.1} MiB {}",
        ours.wall.as_secs_f64() / base.as_secs_f64(),
        if ours.wall.as_secs_f64() <= 1.2 * base.as_secs_f64() { "MET" } else { "MISSED" },
        ours.max_rss_kib as f64 / 1024.0,
        if ours.max_rss_kib <= 24 * 1024 { "MET" } else { "MISSED" }
    );
}
