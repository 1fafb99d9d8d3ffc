//! `cells-updater verify`: offline check of a binary's checksum and signature.

use super::{report, EXIT_USAGE};
use cells_updater::config::Config;
use cells_updater::trust::{self, TrustedKeys};
use cells_updater::Error;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Arguments of `verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The binary to check.
    pub file: PathBuf,
    /// Base64 signature over the binary's SHA-256 (RSA PKCS#1 v1.5 or ECDSA P-256 DER).
    #[arg(long, value_name = "B64")]
    pub signature: String,
    /// Base64 of the raw SHA-256 the binary must have.
    #[arg(long, value_name = "B64")]
    pub checksum: Option<String>,
    /// Trust this PEM public key instead of the configured keys directory (repeatable).
    #[arg(long = "key", value_name = "PEM")]
    pub keys: Vec<PathBuf>,
}

/// Runs `verify`; prints the key id that verified.
pub fn run(root: &Path, config: Option<&Path>, args: &VerifyArgs) -> ExitCode {
    let keys = if args.keys.is_empty() {
        let cfg = match Config::load(root, config) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("cells-updater: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        };
        TrustedKeys::load_dirs(&cfg.trusted_key_dirs())
    } else {
        TrustedKeys::load_files(&args.keys)
    };
    match keys.and_then(|k| verify(&k, args)) {
        Ok((key, digest)) => {
            println!(
                "OK: signed by key {} ({}, {})",
                key.id,
                key.algorithm(),
                key.source
            );
            println!("sha256: {}", trust::encode_checksum(&digest));
            ExitCode::SUCCESS
        }
        Err(e) => report(&e),
    }
}

fn verify(
    keys: &TrustedKeys,
    args: &VerifyArgs,
) -> Result<(trust::TrustedKey, trust::Sha256Digest), Error> {
    let signature = trust::decode_b64("--signature", &args.signature)?;
    let expected = args
        .checksum
        .as_deref()
        .map(trust::decode_checksum)
        .transpose()?;
    let file = std::fs::File::open(&args.file)
        .map_err(|e| Error::InvalidArgument(format!("cannot open {}: {e}", args.file.display())))?;
    let (digest, _) = trust::sha256_reader(file)
        .map_err(|e| Error::InvalidArgument(format!("cannot read {}: {e}", args.file.display())))?;
    if let Some(expected) = expected {
        trust::check_checksum(&digest, &expected)?;
    }
    let key = keys.verify(&digest, &signature)?.clone();
    Ok((key, digest))
}
