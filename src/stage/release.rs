//! What is staged: a release from the update server (checked for form), the manifest of a
//! staged one, the metadata of a binary passed as a descriptor.

use super::*;

/// A release from the update server, checked for form (not yet for trust).
#[derive(Debug, Clone)]
pub struct Release {
    /// The advertised version.
    pub version: CellsVersion,
    /// The edition the binary must be: the one asked for, whatever the server's entry says
    /// (an empty `PackageName` passes the policy, and must not pass the edition check as
    /// Home).
    pub package: crate::package::Package,
    /// Where the binary is downloaded from (checked against the download rules).
    pub url: reqwest::Url,
    /// Advertised SHA-256 of the whole binary.
    pub checksum: Sha256Digest,
    /// Signature over that digest.
    pub signature: Vec<u8>,
    /// Advertised size in bytes.
    pub size: u64,
}

impl Release {
    /// Checks the form of a release offered by the server at `server_url`: a Cells version, a
    /// `BinaryURL` that follows the download rules (on the server's host or one of
    /// `download_hosts`), a 32-byte checksum, a signature, a size. `package` is the edition
    /// asked for.
    pub fn from_offer(
        p: &Offer,
        package: crate::package::Package,
        server_url: &str,
        download_hosts: &[String],
    ) -> Result<Release> {
        let version = CellsVersion::parse(&p.version)?;
        let url = crate::net::check_binary_url(&p.binary_url, server_url, download_hosts)?;
        let checksum = trust::decode_checksum(&p.binary_checksum)?;
        let signature = trust::decode_b64("the signature", &p.binary_signature)
            .map_err(|e| Error::SignatureInvalid(e.message()))?;
        if signature.is_empty() {
            return Err(Error::SignatureInvalid(format!(
                "release {version} carries no signature; unsigned binaries are never installed"
            )));
        }
        if p.binary_size <= 0 {
            return Err(Error::ServerError(format!(
                "release {version} advertises no BinarySize; it cannot be downloaded safely"
            )));
        }
        Ok(Release {
            version,
            package,
            url,
            checksum,
            signature,
            size: p.binary_size as u64,
        })
    }
}

/// What was staged, recorded atomically once every check passed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// The version, as the binary itself reported it.
    pub version: CellsVersion,
    /// Package name.
    pub package: crate::package::Package,
    /// SHA-256 of the staged binary (base64 in the file).
    #[serde(with = "crate::wire::digest")]
    pub sha256: crate::trust::Sha256Digest,
    /// Size in bytes.
    pub size: u64,
    /// Id of the key whose signature verified.
    pub key_id: String,
    /// The URL or `fd:<caller>` it came from.
    pub source: String,
    /// When it was staged, unix seconds.
    pub staged_at: u64,
}

/// Metadata offered with a binary passed as a file descriptor (`StageFromFd`), checked for
/// form once, when it arrives ([`FdMetadata::parse`]).
#[derive(Debug, Clone)]
pub struct FdMetadata {
    /// `Version`.
    pub version: CellsVersion,
    /// `Checksum`: the raw SHA-256.
    pub checksum: crate::trust::Sha256Digest,
    /// `Signature`: its bytes.
    pub signature: Vec<u8>,
    /// `PackageName`; `None` = the package in use.
    pub package: Option<crate::package::Package>,
    /// Who offered it, for the manifest (e.g. `uid 1000`).
    pub offered_by: String,
}

impl FdMetadata {
    /// The metadata a caller sent as text: a version, a base64 SHA-256 and a base64
    /// signature, or `InvalidArgument` quoting the bad value.
    pub fn parse(
        version: &str,
        checksum: &str,
        signature: &str,
        package: Option<crate::package::Package>,
        offered_by: String,
    ) -> Result<FdMetadata> {
        Ok(FdMetadata {
            version: CellsVersion::parse(version)?,
            checksum: crate::trust::decode_checksum(checksum)?,
            signature: crate::trust::decode_b64("Signature", signature)?,
            package,
            offered_by,
        })
    }
}
