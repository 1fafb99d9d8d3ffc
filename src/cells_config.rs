//! Cells' own update settings, from `<CELLS_WORKING_DIR>/pydio.json`: the update URL, the
//! channel and a public key an admin may have set there. The file belongs to the Cells user,
//! so a helper running as that user reads it (I9). Its URL and channel are followed (unless
//! an explicit cells-updater setting wins); its key is **not** trusted, only reported: a
//! compromised Cells could otherwise make root install a binary of its own choosing.

use crate::error::{Error, Result};
use crate::helper::request::{CellsAccount, CellsDir, CellsSettings, ReadCellsConfig};
use crate::helper::Runner;
use serde::{Deserialize, Serialize};

/// The file Cells keeps its configuration in.
pub const CELLS_CONFIG: &str = "pydio.json";
/// Largest `pydio.json` read.
const MAX_CONFIG: u64 = 4 << 20;

/// The update settings found in `pydio.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CellsUpdateSettings {
    /// `defaults.update.updateUrl` (older installs: under `services["pydio.grpc.update"]`).
    pub url: Option<String>,
    /// `services["pydio.grpc.update"].channel`, else `defaults.update.channel`.
    pub channel: Option<String>,
    /// `defaults.update.publicKey` (PEM text), reported only.
    pub public_key: Option<String>,
}

fn text_at<'a>(v: &'a serde_json::Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str().map(str::trim).filter(|s| !s.is_empty())
}

/// Extracts the update settings from the text of `pydio.json`.
pub fn parse(bytes: &[u8]) -> Result<CellsUpdateSettings> {
    let doc: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::InvalidArgument(format!("{CELLS_CONFIG} is not valid JSON ({e})")))?;
    let svc = ["services", "pydio.grpc.update"];
    let pick = |defaults: &[&str], fallback: &str| {
        text_at(&doc, defaults)
            .or_else(|| text_at(&doc, &[svc[0], svc[1], fallback]))
            .map(crate::text::no_nul)
    };
    Ok(CellsUpdateSettings {
        url: pick(&["defaults", "update", "updateUrl"], "updateUrl"),
        channel: text_at(&doc, &[svc[0], svc[1], "channel"])
            .or_else(|| text_at(&doc, &["defaults", "update", "channel"]))
            .map(str::to_string),
        public_key: pick(&["defaults", "update", "publicKey"], "publicKey"),
    })
}

/// Helper side (`cells-config`, as the Cells user): reads `<dir>/pydio.json`, if there is one.
pub fn read_as_user(req: CellsDir) -> Result<CellsSettings<CellsUpdateSettings>> {
    let dir = &req.dir;
    let none = Ok(CellsSettings { settings: None });
    let d = match crate::dirfd::Dir::open_own(std::path::Path::new(dir)) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return none,
        Err(e) => {
            return Err(Error::InvalidArgument(format!(
                "cannot open the Cells working directory {dir}: {e}"
            )))
        }
    };
    match d.read(CELLS_CONFIG, MAX_CONFIG) {
        Ok(None) => none,
        Ok(Some(bytes)) => Ok(CellsSettings {
            settings: Some(parse(&bytes)?),
        }),
        Err(e) => Err(Error::InvalidArgument(format!(
            "cannot read {dir}/{CELLS_CONFIG}: {e}"
        ))),
    }
}

/// Daemon side: the settings in the Cells working directory `dir`, read as `user`.
pub async fn read(
    runner: &Runner,
    dir: &std::path::Path,
    user: &str,
    group: &str,
) -> Result<Option<CellsUpdateSettings>> {
    let who = CellsAccount {
        user: user.to_string(),
        group: group.to_string(),
    };
    let dir = CellsDir {
        dir: crate::license::utf8_dir(dir)?,
    };
    let reply = runner
        .call(ReadCellsConfig(who, dir, std::marker::PhantomData))
        .await?;
    Ok(reply.settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_found_where_cells_keeps_them() {
        let doc = br#"{"defaults":{"update":{"updateUrl":"https://mirror.example/","publicKey":"-----BEGIN PUBLIC KEY-----\nX\n-----END PUBLIC KEY-----","channel":"stable"}},
                      "services":{"pydio.grpc.update":{"channel":"dev"}}}"#;
        let s = parse(doc).unwrap();
        assert_eq!(s.url.as_deref(), Some("https://mirror.example/"));
        assert_eq!(
            s.channel.as_deref(),
            Some("dev"),
            "the service's channel wins"
        );
        assert!(s.public_key.unwrap().contains("BEGIN PUBLIC KEY"));
        let old =
            br#"{"services":{"pydio.grpc.update":{"updateUrl":"https://old/","publicKey":"K"}}}"#;
        let s = parse(old).unwrap();
        assert_eq!(s.url.as_deref(), Some("https://old/"));
        assert_eq!(s.public_key.as_deref(), Some("K"));
        assert_eq!(s.channel, None);
        assert_eq!(parse(b"{}").unwrap(), CellsUpdateSettings::default());
        assert!(parse(b"not json").is_err());
    }
}
