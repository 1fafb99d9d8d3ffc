//! A binary handed over as an open file passes the same checks as a download, and is copied
//! from the descriptor, never re-opened by path (I7).

mod support;

use cells_updater::package::Package;
use cells_updater::stage::{Cancel, FdMetadata};
use support::*;

/// The metadata as a caller sends it (text), checked for form as the bus does.
fn offered(version: &str, sum: &str, sig: &str) -> cells_updater::Result<FdMetadata> {
    FdMetadata::parse(version, sum, sig, None, "uid 0".into())
}

fn meta(version: &str, sum: &str, sig: &str) -> FdMetadata {
    offered(version, sum, sig).unwrap()
}

fn unlinked_file(bytes: &[u8]) -> std::fs::File {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let p = dir.path().join("offered");
    std::fs::write(&p, bytes).unwrap();
    let f = std::fs::File::open(&p).unwrap();
    std::fs::remove_file(&p).unwrap(); // only the descriptor remains
    f
}

#[tokio::test]
async fn offered_file_is_staged_from_the_descriptor() {
    let k = keys();
    let env = StageEnv::new(&[&k.ec_pub]);
    let bytes = fake_cells("4.4.5", "ok");
    let (sum, sig) = sign(&bytes, &k.ec);
    let m = env
        .stager
        .stage_from_file(
            unlinked_file(&bytes),
            &meta("4.4.5", &sum, &sig),
            Package::Home,
            &env.bounds,
            &mut |_| {},
            &Cancel::new(),
        )
        .await
        .expect("stage from fd");
    assert_eq!(m.source, "fd:uid 0");
    assert_eq!(m.package.as_str(), "PydioHome");
    assert_eq!(
        std::fs::read(env.staged_dir().join("4.4.5/cells")).unwrap(),
        bytes
    );
}

#[tokio::test]
async fn offered_files_that_fail_a_check_leave_nothing() {
    let k = keys();
    let good = fake_cells("4.4.5", "ok");
    let (sum, sig) = sign(&good, &k.ec);
    let mut tampered = good.clone();
    tampered[2000] ^= 1;
    let dir_fd = || std::fs::File::open(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let rows: Vec<(&str, std::fs::File, cells_updater::Result<FdMetadata>, &str)> = vec![
        (
            "tampered",
            unlinked_file(&tampered),
            offered("4.4.5", &sum, &sig),
            "ChecksumMismatch",
        ),
        (
            "rogue signature",
            unlinked_file(&good),
            offered("4.4.5", &sum, &sign(&good, &k.rogue).1),
            "SignatureInvalid",
        ),
        (
            "not a regular file",
            dir_fd(),
            offered("4.4.5", &sum, &sig),
            "InvalidArgument",
        ),
        (
            "bad version",
            unlinked_file(&good),
            offered("../x", &sum, &sig),
            "InvalidArgument",
        ),
        (
            "checksum not base64",
            unlinked_file(&good),
            offered("4.4.5", "%%%", &sig),
            "InvalidArgument",
        ),
        (
            "signature not base64",
            unlinked_file(&good),
            offered("4.4.5", &sum, "!!"),
            "InvalidArgument",
        ),
        (
            "downgrade",
            unlinked_file(&good),
            offered("4.4.1", &sum, &sig),
            "Downgrade",
        ),
        (
            "version lie",
            unlinked_file(&good),
            offered("4.4.6", &sum, &sig),
            "VersionMismatch",
        ),
        // An unknown PackageName cannot be spelled here: the bus refuses it (see
        // `daemon::options`). The other edition is refused by the binary's own label.
        (
            "other edition",
            unlinked_file(&good),
            Ok(FdMetadata {
                package: Some(Package::Enterprise),
                ..meta("4.4.5", &sum, &sig)
            }),
            "VersionMismatch",
        ),
    ];
    for (name, file, md, want) in rows {
        let env = StageEnv::new(&[&k.ec_pub]);
        let before = snapshot(&env.staged_dir());
        let outside = env.outside();
        // Metadata of the wrong form is refused where it arrives, before any byte is read.
        let err = match md {
            Err(e) => e,
            Ok(md) => env
                .stager
                .stage_from_file(
                    file,
                    &md,
                    Package::Home,
                    &env.bounds,
                    &mut |_| {},
                    &Cancel::new(),
                )
                .await
                .expect_err(name),
        };
        assert_eq!(err.name(), want, "{name}: {err}");
        assert_eq!(
            snapshot(&env.staged_dir()),
            before,
            "{name}: staging dir changed"
        );
        assert_eq!(env.outside(), outside, "{name}: files outside changed");
    }
}

#[tokio::test]
async fn a_cancelled_stage_leaves_nothing() {
    let k = keys();
    let env = StageEnv::new(&[&k.ec_pub]);
    let bytes = fake_cells("4.4.5", "ok");
    let (sum, sig) = sign(&bytes, &k.ec);
    let cancel = Cancel::new();
    cancel.cancel().unwrap();
    let before = snapshot(&env.staged_dir());
    let err = env
        .stager
        .stage_from_file(
            unlinked_file(&bytes),
            &meta("4.4.5", &sum, &sig),
            Package::Home,
            &env.bounds,
            &mut |_| {},
            &cancel,
        )
        .await
        .unwrap_err();
    assert_eq!(err.name(), "Cancelled");
    assert_eq!(snapshot(&env.staged_dir()), before);
}
