//! The effective update-server settings and where each comes from: an explicit
//! cells-updater setting wins; else Cells' own `pydio.json` (when `follow_cells_config`);
//! else the default. A key found in `pydio.json` is reported, never trusted: the file is the
//! Cells user's, and trusting it would let a compromised Cells have root install its own
//! binary (and raise the floor above every genuine release).

use crate::cells_config::CellsUpdateSettings;
use crate::config::Config;
use std::fmt;

/// Where a setting comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingSource {
    /// cells-updater's built-in default.
    Default,
    /// `/etc/cells-updater/config.toml` or `config.d`.
    Config,
    /// Cells' own `pydio.json`.
    Cells,
}

impl fmt::Display for SettingSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SettingSource::Default => "default",
            SettingSource::Config => "/etc/cells-updater",
            SettingSource::Cells => "Cells' pydio.json",
        })
    }
}

/// The settings in force.
#[derive(Debug, Clone, PartialEq)]
pub struct Effective {
    /// The update server's base URL.
    pub url: String,
    /// Where it comes from.
    pub url_source: SettingSource,
    /// The release channel.
    pub channel: crate::package::Channel,
    /// Where it comes from.
    pub channel_source: SettingSource,
    /// A public key found in `pydio.json` (PEM), reported only.
    pub cells_key: Option<String>,
}

/// The settings in force for `cfg`, given what `pydio.json` holds (if it was read).
pub fn effective(cfg: &Config, cells: Option<&CellsUpdateSettings>) -> Effective {
    let cells = cells.filter(|_| cfg.follow_cells_config);
    // The Cells user's text: kept only as the URL parser writes it back (control characters
    // are dropped or percent-encoded there), so it is inert wherever it is shown (I10).
    let cells_url = cells
        .and_then(|c| reqwest::Url::parse(c.url.as_deref()?).ok())
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        // A URL with credentials is not followed: they would reach LastError and the journal.
        .filter(|u| crate::config::no_credentials(u).is_ok())
        .map(|u| u.to_string());
    let (url, url_source) = match (cfg.server_url_set, cells_url) {
        (true, _) => (cfg.server_url.clone(), SettingSource::Config),
        (false, Some(u)) => (u, SettingSource::Cells),
        (false, None) => (cfg.server_url.clone(), SettingSource::Default),
    };
    let cells_channel = cells
        .and_then(|c| c.channel.as_deref())
        .and_then(crate::package::Channel::parse);
    let (channel, channel_source) = match (cfg.channel_set, cells_channel) {
        (true, _) => (cfg.channel, SettingSource::Config),
        (false, Some(c)) => (c, SettingSource::Cells),
        (false, None) => (cfg.channel, SettingSource::Default),
    };
    Effective {
        url,
        url_source,
        channel,
        channel_source,
        cells_key: cells.and_then(|c| c.public_key.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_settings_win_over_cells_which_wins_over_defaults() {
        let cells = CellsUpdateSettings {
            url: Some("https://mirror.example/".into()),
            channel: Some("dev".into()),
            public_key: Some("PEM".into()),
        };
        let mut cfg = Config::default();
        let e = effective(&cfg, Some(&cells));
        assert_eq!(
            (e.url.as_str(), e.url_source),
            ("https://mirror.example/", SettingSource::Cells)
        );
        assert_eq!(
            (e.channel.as_str(), e.channel_source),
            ("dev", SettingSource::Cells)
        );
        assert_eq!(e.cells_key.as_deref(), Some("PEM"));
        cfg.apply("[server]\nurl = \"https://explicit.example/\"\n", "t")
            .unwrap();
        let e = effective(&cfg, Some(&cells));
        assert_eq!(
            (e.url.as_str(), e.url_source),
            ("https://explicit.example/", SettingSource::Config)
        );
        assert_eq!(e.channel_source, SettingSource::Cells);
        cfg.apply("[server]\nfollow_cells_config = false\n", "t")
            .unwrap();
        let e = effective(&cfg, Some(&cells));
        assert_eq!(
            (e.channel.as_str(), e.channel_source),
            ("stable", SettingSource::Default)
        );
        assert_eq!(e.cells_key, None);
        // Nonsense in pydio.json is not followed.
        let odd = CellsUpdateSettings {
            url: Some("ftp://x/".into()),
            channel: Some("nightly".into()),
            public_key: None,
        };
        let e = effective(&Config::default(), Some(&odd));
        assert_eq!(
            (e.url_source, e.channel_source),
            (SettingSource::Default, SettingSource::Default)
        );
        // Nor a URL with credentials: they would be copied into LastError and the journal.
        let secret = CellsUpdateSettings {
            url: Some("https://admin:s3cret@mirror.example/".into()),
            channel: None,
            public_key: None,
        };
        let e = effective(&Config::default(), Some(&secret));
        assert_eq!(e.url_source, SettingSource::Default);
        assert!(!e.url.contains("s3cret"), "{}", e.url);
        // The Cells user writes terminal escapes and a fake doctor line into its URL: what is
        // followed and shown has no control character left.
        let hostile = CellsUpdateSettings {
            url: Some("https://mirror.example/\u{1b}[2J\nok   everything/".into()),
            channel: None,
            public_key: None,
        };
        let e = effective(&Config::default(), Some(&hostile));
        assert_eq!(e.url_source, SettingSource::Cells);
        assert!(!e.url.chars().any(char::is_control), "{:?}", e.url);
        assert!(e.url.starts_with("https://mirror.example/"), "{}", e.url);
    }
}
