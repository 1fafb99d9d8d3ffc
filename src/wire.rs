//! The persisted text of typed values, unchanged from when they were strings: a version as
//! its text, `""` for none; a digest as base64; capabilities as the base64 of their
//! `security.capability` value, `""` for none. Text that does not decode does not load. The
//! staging manifest uses them too; so do a package (its wire spelling, `""` for none) and the
//! kept binaries' records.

use crate::fcaps::FileCaps;
use crate::package::Package;
use crate::trust::Sha256Digest;
use crate::version::CellsVersion;
use base64::Engine;
use serde::de::Error as _;
use serde::Deserialize;
use serde::{Deserializer, Serializer};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn text<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    String::deserialize(d)
}

/// `Option<CellsVersion>`, `""` for `None`.
pub mod opt_version {
    use super::*;
    pub fn serialize<S: Serializer>(
        v: &Option<CellsVersion>,
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.collect_str(v),
            None => s.serialize_str(""),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Option<CellsVersion>, D::Error> {
        let t = text(d)?;
        if t.is_empty() {
            return Ok(None);
        }
        CellsVersion::parse(&t)
            .map(Some)
            .map_err(|e| D::Error::custom(e.message()))
    }
}

/// `Sha256Digest` as base64.
pub mod digest {
    use super::*;
    pub fn serialize<S: Serializer>(
        v: &Sha256Digest,
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Sha256Digest, D::Error> {
        crate::trust::decode_checksum(&text(d)?).map_err(|e| D::Error::custom(e.message()))
    }
}

/// `Option<Sha256Digest>`, `""` for `None`.
pub mod opt_digest {
    use super::*;
    pub fn serialize<S: Serializer>(
        v: &Option<Sha256Digest>,
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&v.map(|v| B64.encode(v)).unwrap_or_default())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Option<Sha256Digest>, D::Error> {
        let t = text(d)?;
        if t.is_empty() {
            return Ok(None);
        }
        crate::trust::decode_checksum(&t)
            .map(Some)
            .map_err(|e| D::Error::custom(e.message()))
    }
}

/// `Option<FileCaps>` as the base64 of the attribute value, `""` for `None`.
pub mod opt_caps {
    use super::*;
    pub fn serialize<S: Serializer>(
        v: &Option<FileCaps>,
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&v.map(|c| B64.encode(c.encode())).unwrap_or_default())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Option<FileCaps>, D::Error> {
        let t = text(d)?;
        if t.is_empty() {
            return Ok(None);
        }
        let raw = B64
            .decode(&t)
            .map_err(|e| D::Error::custom(format!("capabilities are not base64: {e}")))?;
        FileCaps::decode(&raw)
            .map(Some)
            .map_err(|e| D::Error::custom(format!("capabilities do not decode: {e}")))
    }
}

/// `Option<Package>` as its wire spelling, `""` for `None`.
pub mod opt_package {
    use super::*;
    pub fn serialize<S: Serializer>(
        v: &Option<Package>,
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(v.map_or("", Package::as_str))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Option<Package>, D::Error> {
        let t = text(d)?;
        if t.is_empty() {
            return Ok(None);
        }
        Package::parse(&t).map(Some).ok_or_else(|| {
            D::Error::custom(format!(
                "{:?} is not PydioHome or PydioEnterprise",
                crate::text::one_line(&t, 40)
            ))
        })
    }
}
