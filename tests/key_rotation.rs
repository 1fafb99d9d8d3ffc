//! Several keys may be trusted at once; a release verifies if any one accepts it. Pydio's
//! PKCS#1-under-"PUBLIC KEY" form, SPKI and EC P-256 are all understood, and key ids are the
//! hex SHA-256 of the SPKI DER, as openssl computes it.

mod support;

use cells_updater::trust::TrustedKeys;
use std::process::Command;
use support::*;

fn openssl_key_id(pubkey: &std::path::Path) -> String {
    let der = Command::new("openssl")
        .args(["pkey", "-pubin", "-outform", "DER", "-in"])
        .arg(pubkey)
        .output()
        .unwrap();
    assert!(der.status.success());
    use sha2::Digest;
    sha2::Sha256::digest(&der.stdout)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn key_ids_match_openssl_and_pkcs1_equals_spki() {
    let k = keys();
    let pkcs1 = TrustedKeys::load_files(std::slice::from_ref(&k.rsa_pkcs1_pub)).unwrap();
    let spki = TrustedKeys::load_files(std::slice::from_ref(&k.rsa_spki_pub)).unwrap();
    let ec = TrustedKeys::load_files(std::slice::from_ref(&k.ec_pub)).unwrap();
    assert_eq!(pkcs1.keys()[0].id, openssl_key_id(&k.rsa_spki_pub));
    assert_eq!(spki.keys()[0].id, pkcs1.keys()[0].id);
    assert_eq!(ec.keys()[0].id, openssl_key_id(&k.ec_pub));
    assert_eq!(pkcs1.keys()[0].algorithm(), "rsa-2048");
    assert_eq!(ec.keys()[0].algorithm(), "ec-p256");
}

#[tokio::test]
async fn releases_signed_by_either_trusted_key_are_accepted() {
    let k = keys();
    let mut env = StageEnv::new(&[&k.rsa_pkcs1_pub, &k.rsa2_pub]);
    let ids: Vec<String> = env
        .stager
        .keys
        .keys()
        .iter()
        .map(|k| k.id.clone())
        .collect();

    env.publish("4.4.5", fake_cells("4.4.5", "ok"), &k.rsa);
    let a = env.stage("4.4.5").await.expect("signed by the first key");
    env.bounds.installed = Some(cells_updater::version::CellsVersion::parse("4.4.5").unwrap());
    env.publish("4.4.6", fake_cells("4.4.6", "ok"), &k.rsa2);
    let b = env.stage("4.4.6").await.expect("signed by the second key");

    assert_eq!(a.key_id, ids[0]);
    assert_eq!(b.key_id, ids[1]);
}

#[tokio::test]
async fn spki_rsa_and_ec_p256_keys_verify() {
    let k = keys();
    let env = StageEnv::new(&[&k.rsa_spki_pub]);
    env.publish("4.4.5", fake_cells("4.4.5", "ok"), &k.rsa);
    env.stage("4.4.5").await.expect("RSA key given as SPKI");

    let env = StageEnv::new(&[&k.ec_pub]);
    env.publish("4.4.5", fake_cells("4.4.5", "ok"), &k.ec);
    let m = env.stage("4.4.5").await.expect("ECDSA P-256 signature");
    assert_eq!(m.key_id, openssl_key_id(&k.ec_pub));
}
