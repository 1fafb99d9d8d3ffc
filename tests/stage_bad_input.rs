//! Bad input is refused with a specific error, and nothing changes on disk (I2, I3, I6, I8),
//! including what a hostile update server may try: redirects to another host, link-local or
//! `file://` URLs, a body that stalls.
//! Each row: the fault, the error name, a phrase the message must carry, and what the staging
//! directory may hold afterwards (only a resumable partial, and only after a network cut).

mod support;

use support::*;

#[derive(Clone, Copy, Debug)]
enum Fault {
    CorruptByte,
    BadSignature,
    UntrustedKey,
    WrongChecksum,
    Truncated,
    LongerNoLength,
    LongerWithLength,
    OverMaximum,
    Http500WithTitle,
    MalformedJson,
    Version(&'static str),
    Downgrade,
    SameVersion,
    WrongArch,
    NotElf,
    OtherVersionReported,
    OtherEdition,
    ProbeHangs,
    TinyFilesystem,
    NoTrustedKey,
    RedirectToOtherHost,
    LinkLocalUrl,
    FileUrl,
    StalledBody,
}

struct Row {
    fault: Fault,
    error: &'static str,
    says: &'static str,
    leaves_partial: bool,
}

const ROWS: &[Row] = &[
    Row {
        fault: Fault::RedirectToOtherHost,
        error: "DownloadFailed",
        says: "leaves the original host or scheme",
        leaves_partial: false,
    },
    Row {
        fault: Fault::LinkLocalUrl,
        error: "DownloadFailed",
        says: "points to a link-local address (169.254.169.254)",
        leaves_partial: false,
    },
    Row {
        fault: Fault::FileUrl,
        error: "DownloadFailed",
        says: "uses the scheme \"file\"",
        leaves_partial: false,
    },
    Row {
        fault: Fault::StalledBody,
        error: "DownloadFailed",
        says: "did not finish within 2 s",
        leaves_partial: true,
    },
    Row {
        fault: Fault::CorruptByte,
        error: "ChecksumMismatch",
        says: "corrupt or was tampered",
        leaves_partial: false,
    },
    Row {
        fault: Fault::BadSignature,
        error: "SignatureInvalid",
        says: "not valid for any trusted key",
        leaves_partial: false,
    },
    Row {
        fault: Fault::UntrustedKey,
        error: "SignatureInvalid",
        says: "not signed by a key you trust",
        leaves_partial: false,
    },
    Row {
        fault: Fault::WrongChecksum,
        error: "ChecksumMismatch",
        says: "was advertised",
        leaves_partial: false,
    },
    Row {
        fault: Fault::Truncated,
        error: "DownloadFailed",
        says: "resumes the download",
        leaves_partial: true,
    },
    Row {
        fault: Fault::LongerNoLength,
        error: "DownloadFailed",
        says: "more than the advertised",
        leaves_partial: false,
    },
    Row {
        fault: Fault::LongerWithLength,
        error: "DownloadFailed",
        says: "announces",
        leaves_partial: false,
    },
    Row {
        fault: Fault::OverMaximum,
        error: "DownloadFailed",
        says: "max_binary_size",
        leaves_partial: false,
    },
    Row {
        fault: Fault::Http500WithTitle,
        error: "ServerError",
        says: "Catalog database unavailable",
        leaves_partial: false,
    },
    Row {
        fault: Fault::MalformedJson,
        error: "ServerError",
        says: "not a valid update response",
        leaves_partial: false,
    },
    Row {
        fault: Fault::Version("../../etc"),
        error: "InvalidArgument",
        says: "\"../../etc\" is not a Cells version",
        leaves_partial: false,
    },
    Row {
        fault: Fault::Version("latest"),
        error: "InvalidArgument",
        says: "\"latest\" is not a Cells version",
        leaves_partial: false,
    },
    Row {
        fault: Fault::Version(""),
        error: "InvalidArgument",
        says: "\"\" is not a Cells version",
        leaves_partial: false,
    },
    Row {
        fault: Fault::Downgrade,
        error: "Downgrade",
        says: "4.4.1 is not newer than the installed version 4.4.2",
        leaves_partial: false,
    },
    Row {
        fault: Fault::SameVersion,
        error: "Downgrade",
        says: "4.4.2 is not newer",
        leaves_partial: false,
    },
    Row {
        fault: Fault::WrongArch,
        error: "WrongArchitecture",
        says: "this machine is",
        leaves_partial: false,
    },
    Row {
        fault: Fault::NotElf,
        error: "WrongArchitecture",
        says: "not an ELF",
        leaves_partial: false,
    },
    Row {
        fault: Fault::OtherVersionReported,
        error: "VersionMismatch",
        says: "reports version 4.4.4 but 4.4.5 was advertised",
        leaves_partial: false,
    },
    Row {
        fault: Fault::ProbeHangs,
        error: "VersionMismatch",
        says: "did not answer `version` within 10 s",
        leaves_partial: false,
    },
    Row {
        fault: Fault::OtherEdition,
        error: "VersionMismatch",
        says: "not the PydioHome edition that was advertised",
        leaves_partial: false,
    },
    Row {
        fault: Fault::TinyFilesystem,
        error: "DiskFull",
        says: "only",
        leaves_partial: false,
    },
    Row {
        fault: Fault::NoTrustedKey,
        error: "NoTrustedKey",
        says: "no trusted key is configured",
        leaves_partial: false,
    },
];

/// Sets the fault up; returns the version to stage and, for the tiny filesystem, its mount.
fn arrange(env: &mut StageEnv, fault: Fault) -> (String, Option<std::path::PathBuf>) {
    let k = keys();
    let good = || fake_cells("4.4.5", "ok");
    let mut mount = None;
    let version = match fault {
        Fault::CorruptByte => {
            let bytes = good();
            let (sum, sig) = sign(&bytes, &k.rsa);
            let mut bad = bytes;
            let at = bad.len() / 2;
            bad[at] ^= 0x01;
            env.publish_with("4.4.5", bad, &sum, &sig, Delivery::Normal, false);
            "4.4.5"
        }
        Fault::BadSignature => {
            let bytes = good();
            let (sum, sig) = sign(&bytes, &k.rsa);
            let mut raw = base64_decode(&sig);
            raw[10] ^= 0xff;
            env.publish_with(
                "4.4.5",
                bytes,
                &sum,
                &base64_encode(&raw),
                Delivery::Normal,
                false,
            );
            "4.4.5"
        }
        Fault::UntrustedKey => {
            env.publish("4.4.5", good(), &k.rogue);
            "4.4.5"
        }
        Fault::WrongChecksum => {
            let bytes = good();
            let (_, sig) = sign(&bytes, &k.rsa);
            let (other_sum, _) = sign(b"something else", &k.rsa);
            env.publish_with("4.4.5", bytes, &other_sum, &sig, Delivery::Normal, false);
            "4.4.5"
        }
        Fault::Truncated => {
            let bytes = good();
            let (sum, sig) = sign(&bytes, &k.rsa);
            let n = bytes.len() / 2;
            env.publish_with(
                "4.4.5",
                bytes,
                &sum,
                &sig,
                Delivery::CutAfter { n, times: 1 },
                false,
            );
            "4.4.5"
        }
        Fault::LongerNoLength | Fault::LongerWithLength => {
            let bytes = good();
            let (sum, sig) = sign(&bytes, &k.rsa);
            let d = if matches!(fault, Fault::LongerNoLength) {
                Delivery::TooLongNoLength { extra: 4096 }
            } else {
                Delivery::TooLongWithLength { extra: 4096 }
            };
            env.publish_with("4.4.5", bytes, &sum, &sig, d, false);
            "4.4.5"
        }
        Fault::OverMaximum => {
            env.stager.max_binary_size = 8 * 1024;
            env.publish("4.4.5", good(), &k.rsa);
            "4.4.5"
        }
        Fault::Http500WithTitle => {
            env.server.set_catalog(
                500,
                r#"{"Title":"Catalog database unavailable","Detail":"try later"}"#,
            );
            "4.4.5"
        }
        Fault::MalformedJson => {
            env.server
                .set_catalog(200, r#"{"AvailableBinaries": [{"Version": "4.4.5""#);
            "4.4.5"
        }
        Fault::Version(v) => {
            env.publish(v, good(), &k.rsa);
            v
        }
        Fault::Downgrade => {
            env.publish("4.4.1", fake_cells("4.4.1", "ok"), &k.rsa);
            "4.4.1"
        }
        Fault::SameVersion => {
            env.publish("4.4.2", fake_cells("4.4.2", "ok"), &k.rsa);
            "4.4.2"
        }
        Fault::WrongArch => {
            env.publish("4.4.5", foreign_arch(good()), &k.rsa);
            "4.4.5"
        }
        Fault::NotElf => {
            env.publish("4.4.5", b"#!/bin/sh\nprintf 4.4.5\n".to_vec(), &k.rsa);
            "4.4.5"
        }
        Fault::OtherVersionReported => {
            env.publish("4.4.5", fake_cells("4.4.4", "ok"), &k.rsa);
            "4.4.5"
        }
        Fault::OtherEdition => {
            // A genuine, signed Enterprise build served as the Home release.
            env.publish("4.4.5", fake_cells_enterprise("4.4.5", "ok"), &k.rsa);
            "4.4.5"
        }
        Fault::ProbeHangs => {
            env.publish("4.4.5", fake_cells("4.4.5", "hang"), &k.rsa);
            "4.4.5"
        }
        Fault::TinyFilesystem => {
            // 3 MiB binary (an ELF still runs with trailing bytes) onto a 2 MiB tmpfs.
            let mut bytes = good();
            bytes.resize(3 << 20, 0);
            env.publish("4.4.5", bytes, &k.rsa);
            let dir = env.staged_dir();
            mount_tiny_tmpfs(&dir);
            // The staging area is held by descriptor: open it again, on the tmpfs.
            let state = cells_updater::dirfd::root_dir(
                dir.parent().unwrap(),
                None,
                cells_updater::Error::SwapFailed,
            )
            .unwrap();
            env.stager.area = cells_updater::stage::StagingArea::open(&state).unwrap();
            mount = Some(dir);
            "4.4.5"
        }
        Fault::RedirectToOtherHost => {
            let bytes = good();
            let (sum, sig) = sign(&bytes, &k.rsa);
            let elsewhere = format!("http://127.0.0.2:{}/bin/elsewhere", env.server.addr.port());
            env.server
                .put_binary("elsewhere", bytes.clone(), Delivery::Normal);
            env.publish_with(
                "4.4.5",
                bytes,
                &sum,
                &sig,
                Delivery::Redirect(elsewhere),
                false,
            );
            "4.4.5"
        }
        Fault::LinkLocalUrl | Fault::FileUrl => {
            let bytes = good();
            let (sum, sig) = sign(&bytes, &k.rsa);
            let url = if matches!(fault, Fault::FileUrl) {
                "file:///etc/shadow"
            } else {
                "https://169.254.169.254/latest/meta-data"
            };
            let entry = package_json("4.4.5", url, bytes.len(), &sum, &sig, false);
            env.server.set_catalog(
                200,
                serde_json::json!({"AvailableBinaries": [entry]}).to_string(),
            );
            "4.4.5"
        }
        Fault::StalledBody => {
            // One piece, then silence: the deadline (here 2 s) ends it, not a read timeout.
            env.stager.min_deadline = std::time::Duration::from_secs(2);
            env.stager.min_rate = 1 << 30;
            env.publish_with(
                "4.4.5",
                good(),
                &sign(&good(), &k.rsa).0,
                &sign(&good(), &k.rsa).1,
                Delivery::Slow {
                    chunk: 4096,
                    delay_ms: 1500,
                },
                false,
            );
            "4.4.5"
        }
        Fault::NoTrustedKey => {
            env.stager.keys = cells_updater::trust::TrustedKeys::default();
            env.publish("4.4.5", good(), &k.rsa);
            "4.4.5"
        }
    };
    (version.to_string(), mount)
}

fn mount_tiny_tmpfs(dir: &std::path::Path) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the tiny-filesystem row mounts a tmpfs and needs root (.ci/run runs as root)"
    );
    let out = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m,mode=0700", "tiny"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mount tmpfs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[tokio::test]
async fn every_bad_input_is_refused_and_changes_nothing() {
    let k = keys();
    let mut failures = Vec::new();
    for row in ROWS {
        let mut env = StageEnv::new(&[&k.rsa_pkcs1_pub, &k.ec_pub]);
        let (version, mount) = arrange(&mut env, row.fault);
        let staged_before = snapshot(&env.staged_dir());
        let outside_before = env.outside();

        let result = env.stage(&version).await;

        let staged_after = snapshot(&env.staged_dir());
        let outside_after = env.outside();
        if let Some(dir) = mount {
            let _ = std::process::Command::new("umount")
                .arg("--lazy")
                .arg(&dir)
                .status();
        }
        let row_name = format!("{:?}", row.fault);
        match result {
            Ok(m) => failures.push(format!("{row_name}: staged {m:?} instead of failing")),
            Err(e) => {
                if e.name() != row.error {
                    failures.push(format!(
                        "{row_name}: got {} ({e}), want {}",
                        e.name(),
                        row.error
                    ));
                }
                if !e.message().contains(row.says) {
                    failures.push(format!(
                        "{row_name}: message {:?} lacks {:?}",
                        e.message(),
                        row.says
                    ));
                }
            }
        }
        if outside_after != outside_before {
            failures.push(format!("{row_name}: files outside the staging dir changed"));
        }
        let added: Vec<_> = staged_after
            .keys()
            .filter(|p| !staged_before.contains_key(*p))
            .map(|p| p.display().to_string())
            .collect();
        let changed = staged_before
            .iter()
            .any(|(p, v)| staged_after.get(p) != Some(v));
        let want: Vec<String> = if row.leaves_partial {
            vec![
                format!(".work/{version}"),
                format!(".work/{version}/binary.part"),
                format!(".work/{version}/source.json"),
            ]
        } else {
            vec![]
        };
        let mut added_sorted = added.clone();
        added_sorted.sort();
        if added_sorted != want || changed {
            failures.push(format!(
                "{row_name}: staging dir gained {added:?} (allowed {want:?}), changed={changed}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        ROWS.len(),
        failures.join("\n")
    );
}

/// A server that sends a first burst, then one byte every 300 ms keeps the read timeout alive
/// and would hold the job slot until the overall deadline (a minute here, hours for a large
/// binary). The sliding window (32 KiB/s over 2 s here, 60 s by default) stops it one window
/// after the burst, keeps what arrived for a resumed attempt, and stages nothing.
#[tokio::test]
async fn a_trickling_server_is_stopped_one_window_after_it_slows() {
    let k = keys();
    let mut env = StageEnv::new(&[&k.rsa_pkcs1_pub]);
    env.stager.rate_window = std::time::Duration::from_secs(2);
    let mut bytes = fake_cells("4.4.5", "ok");
    bytes.resize(1 << 20, 0x11);
    let (sum, sig) = sign(&bytes, &k.rsa);
    env.publish_with(
        "4.4.5",
        bytes,
        &sum,
        &sig,
        Delivery::Trickle {
            first: 64 << 10,
            every_ms: 300,
        },
        false,
    );
    let outside = env.outside();
    let t0 = std::time::Instant::now();
    let err = env.stage("4.4.5").await.unwrap_err();
    let took = t0.elapsed();
    assert_eq!(err.name(), "DownloadFailed", "{err}");
    assert!(
        err.message().contains("below [server] min_window_rate"),
        "{err}"
    );
    assert!(
        took < std::time::Duration::from_secs(10),
        "the trickle held the download {took:?}"
    );
    assert!(
        !env.staged_dir().join("4.4.5").exists(),
        "nothing is staged"
    );
    assert_eq!(
        env.outside(),
        outside,
        "nothing changed outside the staging area"
    );
}

/// The same server trickling its response headers instead (a byte every 300 ms): the headers
/// get one window (or one read timeout), then the download stops.
#[tokio::test]
async fn a_server_trickling_its_headers_is_stopped_too() {
    let k = keys();
    let mut env = StageEnv::new(&[&k.rsa_pkcs1_pub]);
    env.stager.rate_window = std::time::Duration::from_secs(2);
    env.settings.timeout = std::time::Duration::from_secs(2);
    let bytes = fake_cells("4.4.5", "ok");
    let (sum, sig) = sign(&bytes, &k.rsa);
    env.publish_with(
        "4.4.5",
        bytes,
        &sum,
        &sig,
        Delivery::TrickleHeaders { every_ms: 300 },
        false,
    );
    let t0 = std::time::Instant::now();
    let err = env.stage("4.4.5").await.unwrap_err();
    let took = t0.elapsed();
    assert_eq!(err.name(), "DownloadFailed", "{err}");
    // reqwest's own read timeout may stop it first; either way within the bound.
    assert!(
        err.message().contains("no complete response headers")
            || err.message().contains("timed out"),
        "{err}"
    );
    assert!(took < std::time::Duration::from_secs(10), "held {took:?}");
    assert!(!env.staged_dir().join("4.4.5").exists());
}
