//! Trust: which keys are trusted, and checksum + signature checks over a SHA-256 digest
//! computed while streaming (invariant I2).

mod keys;

pub use keys::{parse_pem_keys, short_id as keys_short_id, KeyKind, TrustedKey, TrustedKeys};

use crate::error::{Error, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use sha2::{Digest, Sha256};
use std::io::Read;

/// A SHA-256 digest.
pub type Sha256Digest = [u8; 32];

/// Decodes a base64 (standard alphabet) field of a release, naming the field on error.
pub fn decode_b64(field: &str, value: &str) -> Result<Vec<u8>> {
    B64.decode(value.trim()).map_err(|e| {
        Error::InvalidArgument(format!("{field} is not valid base64 ({e}): {value:?}"))
    })
}

/// Decodes `BinaryChecksum`: base64 of the raw 32-byte SHA-256 (not hex).
pub fn decode_checksum(value: &str) -> Result<Sha256Digest> {
    let raw = decode_b64("the checksum", value)?;
    raw.as_slice().try_into().map_err(|_| {
        Error::InvalidArgument(format!(
            "the checksum must be base64 of a 32-byte SHA-256, got {} bytes: {value:?}",
            raw.len()
        ))
    })
}

/// Base64 of a digest, as the update server writes `BinaryChecksum`.
pub fn encode_checksum(digest: &Sha256Digest) -> String {
    B64.encode(digest)
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `Ok` when the computed digest equals the advertised one.
pub fn check_checksum(computed: &Sha256Digest, advertised: &Sha256Digest) -> Result<()> {
    if computed == advertised {
        Ok(())
    } else {
        Err(Error::ChecksumMismatch(format!(
            "the binary's SHA-256 is {} but {} was advertised; the binary is corrupt or was \
             tampered with, nothing was staged",
            encode_checksum(computed),
            encode_checksum(advertised)
        )))
    }
}

/// SHA-256 of everything `reader` yields, in fixed-size chunks (memory stays flat).
pub fn sha256_reader(mut reader: impl Read) -> std::io::Result<(Sha256Digest, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hasher.finalize().into(), total))
}
