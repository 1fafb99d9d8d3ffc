//! An interrupted download resumes with a `Range` request; the partial's prefix is hashed
//! again, never trusted.

mod support;

use support::*;

#[tokio::test]
async fn cut_transfer_resumes_with_range_and_hashes_right() {
    let k = keys();
    let env = StageEnv::new(&[&k.rsa_pkcs1_pub]);
    let mut bytes = fake_cells("4.4.5", "ok");
    bytes.resize(1 << 20, 0x5a);
    let (sum, sig) = sign(&bytes, &k.rsa);
    let cut = 300_000;
    env.publish_with(
        "4.4.5",
        bytes.clone(),
        &sum,
        &sig,
        Delivery::CutAfter { n: cut, times: 1 },
        false,
    );

    let err = env.stage("4.4.5").await.unwrap_err();
    assert_eq!(err.name(), "DownloadFailed", "{err}");
    let part = env.staged_dir().join(".work/4.4.5/binary.part");
    assert_eq!(std::fs::metadata(&part).unwrap().len(), cut as u64);

    let m = env.stage("4.4.5").await.expect("resumed stage");
    assert_eq!(cells_updater::trust::encode_checksum(&m.sha256), sum);
    assert_eq!(
        std::fs::read(env.staged_dir().join("4.4.5/cells")).unwrap(),
        bytes
    );
    let gets: Vec<_> = env
        .server
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET")
        .collect();
    assert_eq!(gets.len(), 2);
    assert_eq!(gets[0].headers.get("range"), None);
    assert_eq!(
        gets[1].headers.get("range").map(String::as_str),
        Some("bytes=300000-")
    );
}

#[tokio::test]
async fn a_tampered_partial_is_caught_by_the_rehash() {
    let k = keys();
    let env = StageEnv::new(&[&k.rsa_pkcs1_pub]);
    let mut bytes = fake_cells("4.4.5", "ok");
    bytes.resize(1 << 20, 0x5a);
    let (sum, sig) = sign(&bytes, &k.rsa);
    env.publish_with(
        "4.4.5",
        bytes,
        &sum,
        &sig,
        Delivery::CutAfter {
            n: 400_000,
            times: 1,
        },
        false,
    );
    env.stage("4.4.5").await.unwrap_err();
    let part = env.staged_dir().join(".work/4.4.5/binary.part");
    let mut p = std::fs::read(&part).unwrap();
    p[100] ^= 0xff;
    std::fs::write(&part, p).unwrap();

    let err = env.stage("4.4.5").await.unwrap_err();
    assert_eq!(err.name(), "ChecksumMismatch", "{err}");
    assert!(
        !env.staged_dir().join(".work/4.4.5").exists(),
        "a failed verification leaves no partial"
    );
    assert!(!env.staged_dir().join("4.4.5").exists());
}
