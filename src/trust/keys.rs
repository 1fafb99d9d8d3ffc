//! Trusted public keys from PEM files: RSA with a PKCS#1 or SPKI body whatever the label says
//! (Pydio's key is PKCS#1 under "PUBLIC KEY"), and EC P-256 (SPKI).

use super::{hex, Sha256Digest};
use crate::error::{Error, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::{DecodePublicKey, EncodePublicKey};
use rsa::traits::PublicKeyParts;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Smallest RSA modulus accepted, in bits.
const MIN_RSA_BITS: usize = 2048;

/// The algorithm of a trusted key; it decides which signature check applies.
#[derive(Debug, Clone)]
pub enum KeyKind {
    /// RSA PKCS#1 v1.5 over the SHA-256 digest.
    Rsa(rsa::RsaPublicKey),
    /// ECDSA P-256, DER signature, over the SHA-256 digest.
    P256(p256::ecdsa::VerifyingKey),
}

/// One trusted key.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    /// Hex SHA-256 of the key's SubjectPublicKeyInfo DER.
    pub id: String,
    /// Where the key came from (file path or `--key` argument).
    pub source: String,
    /// The key itself.
    pub kind: KeyKind,
}

impl TrustedKey {
    /// `"rsa-2048"` or `"ec-p256"`.
    pub fn algorithm(&self) -> String {
        match &self.kind {
            KeyKind::Rsa(k) => format!("rsa-{}", k.size() * 8),
            KeyKind::P256(_) => "ec-p256".to_string(),
        }
    }

    /// The key in canonical form: its SubjectPublicKeyInfo as one `PUBLIC KEY` PEM block,
    /// rebuilt from the parsed key (nothing of the text it came from survives).
    pub fn to_pem(&self) -> Result<String> {
        let pem = match &self.kind {
            KeyKind::Rsa(k) => k.to_public_key_pem(rsa::pkcs8::LineEnding::LF),
            KeyKind::P256(k) => k.to_public_key_pem(rsa::pkcs8::LineEnding::LF),
        };
        pem.map_err(|e| Error::NoTrustedKey(format!("cannot encode the key as PEM: {e}")))
    }

    /// True when `signature` over `digest` is valid for this key.
    pub fn accepts(&self, digest: &Sha256Digest, signature: &[u8]) -> bool {
        match &self.kind {
            KeyKind::Rsa(k) => k
                .verify(rsa::Pkcs1v15Sign::new::<Sha256>(), digest, signature)
                .is_ok(),
            KeyKind::P256(k) => match p256::ecdsa::Signature::from_der(signature) {
                Ok(sig) => k.verify_prehash(digest, &sig).is_ok(),
                Err(_) => false,
            },
        }
    }
}

/// The set of trusted keys; a signature is valid if any one of them accepts it (rotation).
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: Vec<TrustedKey>,
}

impl TrustedKeys {
    /// Every `*.pem` in `dir`, in name order. A missing directory yields an empty set; a file
    /// that holds no usable key is an error naming the file.
    pub fn load_dir(dir: &Path) -> Result<Self> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => {
                return Err(Error::NoTrustedKey(format!(
                    "cannot read the keys directory {}: {e}",
                    dir.display()
                )))
            }
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "pem") && p.is_file())
            .collect();
        paths.sort();
        Self::load_files(&paths)
    }

    /// Every `*.pem` of each directory, in order (the admin's `/etc` keys, then the
    /// vendor's), the same key once.
    pub fn load_dirs(dirs: &[PathBuf]) -> Result<Self> {
        let mut keys: Vec<TrustedKey> = Vec::new();
        for d in dirs {
            for k in Self::load_dir(d)?.keys {
                if !keys.iter().any(|have| have.id == k.id) {
                    keys.push(k);
                }
            }
        }
        Ok(Self { keys })
    }

    /// Keys from the given PEM files.
    pub fn load_files(paths: &[PathBuf]) -> Result<Self> {
        let mut keys = Vec::new();
        for path in paths {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Error::NoTrustedKey(format!("cannot read key file {}: {e}", path.display()))
            })?;
            keys.extend(parse_pem_keys(&text, &path.display().to_string())?);
        }
        Ok(Self { keys })
    }

    /// The keys, in load order.
    pub fn keys(&self) -> &[TrustedKey] {
        &self.keys
    }

    /// True when no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The first key that accepts `signature` over `digest`.
    pub fn verify(&self, digest: &Sha256Digest, signature: &[u8]) -> Result<&TrustedKey> {
        if self.keys.is_empty() {
            return Err(Error::NoTrustedKey(
                "no trusted key is configured; put the publisher's public key (PEM) in the \
                 keys directory ([server] keys_dir)"
                    .into(),
            ));
        }
        self.keys
            .iter()
            .find(|k| k.accepts(digest, signature))
            .ok_or_else(|| {
                let ids: Vec<String> = self.keys.iter().map(|k| short_id(&k.id)).collect();
                Error::SignatureInvalid(format!(
                    "the signature is not valid for any trusted key (tried {}); the binary was \
                     not signed by a key you trust, or was altered; nothing was staged",
                    ids.join(", ")
                ))
            })
    }
}

/// The first 16 hex digits of a key id, for messages.
pub fn short_id(id: &str) -> String {
    id.chars().take(16).collect()
}

/// Parses every PEM block of `text` as a public key. The label is not trusted to say what the
/// body is: PKCS#1 `RSAPublicKey` and SPKI (RSA or P-256) are both tried.
pub fn parse_pem_keys(text: &str, source: &str) -> Result<Vec<TrustedKey>> {
    let blocks = pem_blocks(text);
    if blocks.is_empty() {
        return Err(Error::NoTrustedKey(format!(
            "{source} holds no PEM block (-----BEGIN ...-----); expected a public key"
        )));
    }
    blocks
        .into_iter()
        .map(|(label, body)| {
            let der = B64.decode(&body).map_err(|e| {
                Error::NoTrustedKey(format!(
                    "{source}: the PEM block {label:?} is not valid base64: {e}"
                ))
            })?;
            key_from_der(&der, source)
        })
        .collect()
}

fn key_from_der(der: &[u8], source: &str) -> Result<TrustedKey> {
    let bad = |what: String| Error::NoTrustedKey(format!("{source}: {what}"));
    let kind = if let Ok(k) = rsa::RsaPublicKey::from_pkcs1_der(der) {
        KeyKind::Rsa(k)
    } else if let Ok(k) = rsa::RsaPublicKey::from_public_key_der(der) {
        KeyKind::Rsa(k)
    } else if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_der(der) {
        KeyKind::P256(k)
    } else {
        return Err(bad(
            "not an RSA public key (PKCS#1 or SubjectPublicKeyInfo) nor an EC P-256 public key"
                .into(),
        ));
    };
    let spki = match &kind {
        KeyKind::Rsa(k) => {
            if k.size() * 8 < MIN_RSA_BITS {
                return Err(bad(format!(
                    "RSA key of {} bits is too weak; at least {MIN_RSA_BITS} bits are required",
                    k.size() * 8
                )));
            }
            k.to_public_key_der()
        }
        KeyKind::P256(k) => k.to_public_key_der(),
    }
    .map_err(|e| bad(format!("cannot encode the key: {e}")))?;
    Ok(TrustedKey {
        id: hex(&Sha256::digest(spki.as_bytes())),
        source: source.to_string(),
        kind,
    })
}

/// `(label, base64 body)` of each `-----BEGIN X----- … -----END X-----` block. Lenient about
/// whitespace and headers-free; ignores text outside blocks.
fn pem_blocks(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|r| r.strip_suffix("-----"))
        {
            current = Some((label.to_string(), String::new()));
        } else if line.starts_with("-----END ") {
            if let Some(block) = current.take() {
                out.push(block);
            }
        } else if let Some((_, body)) = current.as_mut() {
            body.extend(line.chars().filter(|c| !c.is_whitespace()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pydios_published_key_parses_with_its_known_id() {
        // The key Cells embeds (UpdateDefaultPublicKey): a PKCS#1 body under a PUBLIC KEY
        // label, as the package ships it for the vendor keys directory.
        let keys = parse_pem_keys(include_str!("../../dist/keys/pydio.pem"), "pydio.pem").unwrap();
        assert_eq!(keys.len(), 1);
        assert!(keys[0].id.starts_with("87e83f48c1a0a720"), "{}", keys[0].id);
        assert_eq!(keys[0].algorithm(), "rsa-2048");
    }

    #[test]
    fn pem_blocks_are_found_among_noise() {
        let text = "comment\n-----BEGIN PUBLIC KEY-----\nQUJD\n REVG \n-----END PUBLIC KEY-----\ntrailer\n";
        assert_eq!(
            pem_blocks(text),
            vec![("PUBLIC KEY".to_string(), "QUJDREVG".to_string())]
        );
    }

    #[test]
    fn garbage_is_rejected_with_the_source_named() {
        let err = parse_pem_keys("no pem here", "/k/a.pem").unwrap_err();
        assert_eq!(err.name(), "NoTrustedKey");
        assert!(err.message().contains("/k/a.pem"));
        let err = parse_pem_keys(
            "-----BEGIN PUBLIC KEY-----\nQUJD\n-----END PUBLIC KEY-----\n",
            "/k/b.pem",
        )
        .unwrap_err();
        assert!(err.message().contains("not an RSA public key"), "{err}");
    }

    #[test]
    fn empty_set_is_no_trusted_key() {
        let err = TrustedKeys::default().verify(&[0; 32], b"sig").unwrap_err();
        assert_eq!(err.name(), "NoTrustedKey");
    }
}
