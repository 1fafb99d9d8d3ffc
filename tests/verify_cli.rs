//! `cells-updater verify`: offline, exit 0 with the key id, exit 1 with the specific error,
//! exit 2 on usage errors; uses the configured keys when no --key is given.

mod support;

use std::process::{Command, Output};
use support::*;

fn cli(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cells-updater"))
        .args(args)
        .output()
        .unwrap()
}

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

#[test]
fn verify_reports_the_key_or_the_specific_error() {
    let k = keys();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let file = dir.path().join("cells");
    let bytes = fake_cells("4.4.5", "ok");
    std::fs::write(&file, &bytes).unwrap();
    let (sum, sig) = sign(&bytes, &k.rsa);
    let key_id =
        cells_updater::trust::TrustedKeys::load_files(std::slice::from_ref(&k.rsa_pkcs1_pub))
            .unwrap()
            .keys()[0]
            .id
            .clone();

    let ok = cli(&[
        os("verify"),
        file.as_os_str(),
        os("--signature"),
        os(&sig),
        os("--checksum"),
        os(&sum),
        os("--key"),
        k.rsa_pkcs1_pub.as_os_str(),
    ]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains(&key_id));

    let (other_sum, _) = sign(b"other", &k.rsa);
    let bad_sum = cli(&[
        os("verify"),
        file.as_os_str(),
        os("--signature"),
        os(&sig),
        os("--checksum"),
        os(&other_sum),
        os("--key"),
        k.rsa_pkcs1_pub.as_os_str(),
    ]);
    assert_eq!(bad_sum.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad_sum.stderr)
        .contains("com.pydio.CellsUpdater1.Error.ChecksumMismatch"));

    let rogue = cli(&[
        os("verify"),
        file.as_os_str(),
        os("--signature"),
        os(&sig),
        os("--key"),
        k.rogue_pub.as_os_str(),
    ]);
    assert_eq!(rogue.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&rogue.stderr).contains("Error.SignatureInvalid"));

    let garbage = cli(&[
        os("verify"),
        file.as_os_str(),
        os("--signature"),
        os("!!"),
        os("--key"),
        k.rsa_pkcs1_pub.as_os_str(),
    ]);
    assert_eq!(garbage.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&garbage.stderr).contains("Error.InvalidArgument"));

    let usage = cli(&[os("verify"), file.as_os_str()]);
    assert_eq!(
        usage.status.code(),
        Some(2),
        "missing --signature is a usage error"
    );

    // Without --key: the configured keys directory, under the root prefix.
    let root = dir.path().join("root");
    let keys_dir = root.join("etc/cells-updater/keys.d");
    std::fs::create_dir_all(&keys_dir).unwrap();
    let none = cli(&[
        os("--root"),
        root.as_os_str(),
        os("verify"),
        file.as_os_str(),
        os("--signature"),
        os(&sig),
    ]);
    assert_eq!(none.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&none.stderr).contains("Error.NoTrustedKey"));
    std::fs::copy(&k.rsa_pkcs1_pub, keys_dir.join("pydio.pem")).unwrap();
    let configured = cli(&[
        os("--root"),
        root.as_os_str(),
        os("verify"),
        file.as_os_str(),
        os("--signature"),
        os(&sig),
    ]);
    assert_eq!(
        configured.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&configured.stderr)
    );
    assert!(String::from_utf8_lossy(&configured.stdout).contains(&key_id));
}
