//! What the updater would trust and ask: the settings in force, the trusted keys and the
//! update server's answer.

use super::{finding, short_ids, Finding, Host, KeySource, Level, SettingsReport};
use crate::error::Error;
use crate::settings::Effective;

impl Host {
    pub(super) fn check_settings(&self, s: &SettingsReport) -> Vec<Finding> {
        let e = &s.effective;
        let mut out = vec![finding(
            "server-url",
            Level::Ok,
            format!(
                "{} ({}); channel {} ({})",
                e.url, e.url_source, e.channel, e.channel_source
            ),
            "",
        )];
        if let (Some(p), true) = (&s.cells_problem, self.cfg.follow_cells_config) {
            out.push(finding(
                "pydio-json",
                Level::Warn,
                format!("Cells' own update settings are not followed: {p}"),
                "",
            ));
        }
        if let Some(k) = &s.cells_key {
            if k.ids.len() > 1 {
                out.push(finding(
                    "pydio-json",
                    Level::Warn,
                    format!(
                        "pydio.json's publicKey holds {} keys ({}); Pydio gives one: a second \
                         key is a sign that someone added it",
                        k.ids.len(),
                        short_ids(&k.ids)
                    ),
                    "check the publicKey in pydio.json; `config --cells-key` prints no key \
                     while there is more than one",
                ));
            }
            out.push(match (&k.id, k.trusted) {
                (Some(_), true) => finding(
                    "pydio-json",
                    Level::Ok,
                    format!(
                        "pydio.json names key {}, which is trusted from /etc or the vendor",
                        short_ids(&k.ids)
                    ),
                    "",
                ),
                (Some(_), false) => finding(
                    "pydio-json",
                    Level::Warn,
                    format!(
                        "pydio.json names key {}, which is not trusted: a file the \
                         Cells user can write is never trusted",
                        short_ids(&k.ids)
                    ),
                    "if you set that key yourself, trust it as root: cells-updater config \
                     --cells-key > /etc/cells-updater/keys.d/cells.pem",
                ),
                (None, _) => finding(
                    "pydio-json",
                    Level::Warn,
                    format!(
                        "pydio.json has a publicKey that is not a usable key: {}",
                        k.problem.clone().unwrap_or_default()
                    ),
                    "",
                ),
            });
        }
        out
    }

    pub(super) fn check_keys(&self, s: &SettingsReport) -> Finding {
        if let Ok(k) = &s.keys {
            let mut per_file: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
            for key in k {
                per_file.entry(&key.file).or_default().push(key.id.clone());
            }
            if let Some((file, ids)) = per_file.iter().find(|(_, ids)| ids.len() > 1) {
                return finding(
                    "keys",
                    Level::Warn,
                    format!(
                        "{} holds {} keys ({}), all trusted; one key per file is the rule, so \
                         that a key added beside another is seen",
                        crate::text::one_line(file, 200),
                        ids.len(),
                        short_ids(ids)
                    ),
                    "keep one key per file in the keys directory",
                );
            }
        }
        match &s.keys {
            Err(e) => finding(
                "keys",
                Level::Fail,
                e.message(),
                "fix or remove the named file",
            ),
            Ok(k) if k.is_empty() => finding(
                "keys",
                Level::Fail,
                "no key is trusted: no release can be verified".into(),
                "put the publisher's PEM key in /etc/cells-updater/keys.d/, or set [server] \
                 trust_vendor_keys = true",
            ),
            Ok(k) => finding(
                "keys",
                Level::Ok,
                k.iter()
                    .map(|k| {
                        format!(
                            "{} {} ({})",
                            crate::trust::keys_short_id(&k.id),
                            k.algorithm,
                            match k.source {
                                KeySource::Vendor => "vendor",
                                KeySource::Etc => "/etc",
                            }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                "",
            ),
        }
    }

    /// The update server; also whether the network helper ran.
    pub(super) async fn check_server(
        &self,
        e: &Effective,
        installed: &str,
    ) -> (Finding, Option<std::result::Result<(), String>>) {
        let settings = crate::update_server::ServerSettings {
            url: e.url.clone(),
            ..self.cfg.server_settings()
        };
        let current = if installed.is_empty() {
            "0.0.0"
        } else {
            installed
        };
        let package = self.package().await;
        let request = crate::update_server::UpdateRequest::new(e.channel, package, current);
        match crate::update_server::check(&self.runner, &settings, &request).await {
            Ok(resp) => {
                let versions: Vec<String> = resp
                    .available_binaries
                    .iter()
                    .map(|p| crate::text::one_line(&p.version, 40))
                    .collect();
                (
                    finding(
                        "server",
                        Level::Ok,
                        if versions.is_empty() {
                            format!(
                                "{} answers: nothing newer than {current} for {package} ({})",
                                e.url, e.channel
                            )
                        } else {
                            format!(
                                "{} answers: {} ({package}, {})",
                                e.url,
                                versions.join(", "),
                                e.channel
                            )
                        },
                        "",
                    ),
                    Some(Ok(())),
                )
            }
            Err(err) => {
                let ran = if matches!(err, Error::ServerError(_)) {
                    Some(Ok(()))
                } else {
                    Some(Err(err.message()))
                };
                (
                    finding(
                        "server",
                        Level::Fail,
                        format!("{}: {}", e.url, err.message()),
                        "check the network, the proxy and [server] url",
                    ),
                    ran,
                )
            }
        }
    }
}
