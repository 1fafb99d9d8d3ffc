//! The Cells update-server client: `POST <base>/a/update-server/` with an `UpdateRequest`,
//! read an `UpdateResponse` leniently (protobuf-JSON: int64 as string or number, enums as
//! name or number, unknown keys ignored, absent = zero).

use crate::error::{Error, Result};
use crate::helper::protocol::Frame;
use crate::helper::request::HttpStatus;
use crate::helper::{Request, Runner};
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// The request body. Keys are exactly those of Cells' `UpdateRequest`; empty ones are left out.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct UpdateRequest {
    #[serde(rename = "Channel", skip_serializing_if = "String::is_empty")]
    pub channel: String,
    #[serde(rename = "PackageName", skip_serializing_if = "String::is_empty")]
    pub package_name: String,
    #[serde(rename = "CurrentVersion", skip_serializing_if = "String::is_empty")]
    pub current_version: String,
    #[serde(rename = "GOOS", skip_serializing_if = "String::is_empty")]
    pub goos: String,
    #[serde(rename = "GOARCH", skip_serializing_if = "String::is_empty")]
    pub goarch: String,
    #[serde(rename = "ServiceName", skip_serializing_if = "String::is_empty")]
    pub service_name: String,
    #[serde(rename = "LicenseInfo", skip_serializing_if = "BTreeMap::is_empty")]
    pub license_info: BTreeMap<String, String>,
}

impl UpdateRequest {
    /// A request for this machine's OS and architecture.
    pub fn new(
        channel: crate::package::Channel,
        package: crate::package::Package,
        current_version: &str,
    ) -> Self {
        UpdateRequest {
            channel: channel.as_str().into(),
            package_name: package.as_str().into(),
            current_version: current_version.into(),
            goos: GOOS.into(),
            goarch: goarch().into(),
            ..Default::default()
        }
    }
}

/// Go's name for this OS.
pub const GOOS: &str = "linux";

/// Go's name for this build's architecture.
pub fn goarch() -> &'static str {
    if cfg!(target_arch = "x86_64") {
        "amd64"
    } else if cfg!(target_arch = "aarch64") {
        "arm64"
    } else if cfg!(target_arch = "arm") {
        "arm"
    } else if cfg!(target_arch = "x86") {
        "386"
    } else {
        std::env::consts::ARCH
    }
}

/// `Status` of a package. An absent `Status` counts as `Released`: older servers send none,
/// and protojson leaves out the zero value; an explicit `Draft` or `Pending` is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PackageStatus {
    Draft,
    Pending,
    #[default]
    Released,
    /// A number or name this client does not know.
    Unknown,
}

/// One release the server offers: an entry of `AvailableBinaries` (Cells' `update.Package`),
/// as the server sent it (nothing checked yet).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Offer {
    #[serde(rename = "PackageName", deserialize_with = "string")]
    pub package_name: String,
    #[serde(rename = "Version", deserialize_with = "string")]
    pub version: String,
    #[serde(rename = "ReleaseDate", deserialize_with = "int64")]
    pub release_date: i64,
    #[serde(rename = "Label", deserialize_with = "string")]
    pub label: String,
    #[serde(rename = "Description", deserialize_with = "string")]
    pub description: String,
    #[serde(rename = "ChangeLog", deserialize_with = "string")]
    pub change_log: String,
    #[serde(rename = "License", deserialize_with = "string")]
    pub license: String,
    #[serde(rename = "BinaryURL", deserialize_with = "string")]
    pub binary_url: String,
    #[serde(rename = "BinaryChecksum", deserialize_with = "string")]
    pub binary_checksum: String,
    #[serde(rename = "BinarySignature", deserialize_with = "string")]
    pub binary_signature: String,
    #[serde(rename = "BinaryHashType", deserialize_with = "string")]
    pub binary_hash_type: String,
    #[serde(rename = "BinarySize", deserialize_with = "int64")]
    pub binary_size: i64,
    #[serde(rename = "BinaryOS", deserialize_with = "string")]
    pub binary_os: String,
    #[serde(rename = "BinaryArch", deserialize_with = "string")]
    pub binary_arch: String,
    #[serde(rename = "IsPatch", deserialize_with = "boolean")]
    pub is_patch: bool,
    #[serde(rename = "PatchAlgorithm", deserialize_with = "string")]
    pub patch_algorithm: String,
    #[serde(rename = "ServiceName", deserialize_with = "string")]
    pub service_name: String,
    #[serde(rename = "Status", deserialize_with = "status")]
    pub status: PackageStatus,
}

/// The response body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct UpdateResponse {
    #[serde(rename = "Channel", deserialize_with = "string")]
    pub channel: String,
    #[serde(rename = "AvailableBinaries", deserialize_with = "packages")]
    pub available_binaries: Vec<Offer>,
}

/// Parses a response body.
pub fn parse_response(body: &[u8]) -> Result<UpdateResponse> {
    serde_json::from_slice(body).map_err(|e| {
        Error::ServerError(format!(
            "the update server's answer is not a valid update response ({e}); check [server] url"
        ))
    })
}

/// The check endpoint for a configured base URL (in [`crate::net`], which the network helper
/// also uses to check what it is sent).
pub use crate::net::endpoint;

/// Where and how the update server is asked.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// The configured base URL.
    pub url: String,
    /// Longest a check may take.
    pub timeout: Duration,
    /// Proxies.
    pub proxy: crate::net::ProxySettings,
    /// Hosts a `BinaryURL` may point at besides the server's own (`[server] download_hosts`).
    pub download_hosts: Vec<String>,
}

/// POSTs `request` through the network helper; returns the status and the body.
async fn post(
    runner: &Runner,
    server: &ServerSettings,
    request: &UpdateRequest,
) -> Result<(u16, Vec<u8>)> {
    let req = crate::net::CheckRequest {
        server_url: server.url.clone(),
        body: serde_json::to_value(request)
            .map_err(|e| Error::Internal(format!("cannot encode the request: {e}")))?,
        timeout_secs: server.timeout.as_secs().max(1),
        proxy: server.proxy.clone(),
    };
    let mut running = runner.start(Request::Check(req)).await?;
    let mut body = Vec::new();
    loop {
        match running.next().await? {
            Frame::Data(d) => {
                if body.len() + d.len() > crate::net::MAX_RESPONSE_BYTES {
                    return Err(Error::ServerError(
                        "the update server's answer is too large; refusing it".into(),
                    ));
                }
                body.extend_from_slice(&d);
            }
            Frame::Meta(_) => {}
            Frame::Result(r) => {
                let reply: HttpStatus = running.reply(r?)?;
                return Ok((reply.status, body));
            }
        }
    }
}

/// Asks the update server which binaries are available.
pub async fn check(
    runner: &Runner,
    server: &ServerSettings,
    request: &UpdateRequest,
) -> Result<UpdateResponse> {
    let (status, bytes) = post(runner, server, request).await?;
    if status != 200 {
        return Err(Error::ServerError(server_failure(status, &bytes)));
    }
    parse_response(&bytes)
}

/// The Enterprise check: `PydioEnterprise` with `LicenseInfo {Key}`. A 200 answer means the
/// key is valid; any other status is `LicenseRejected` (an unreachable server stays
/// `ServerError`: that says nothing about the key).
pub async fn check_license(
    runner: &Runner,
    server: &ServerSettings,
    request: &UpdateRequest,
) -> Result<UpdateResponse> {
    let (status, bytes) = post(runner, server, request).await?;
    if status != 200 {
        return Err(Error::LicenseRejected(format!(
            "the update server did not accept the license key ({}); nothing was changed; check \
             the key, or ask Pydio support",
            server_failure(status, &bytes)
                .trim_end_matches("; try again later or check [server] url")
        )));
    }
    parse_response(&bytes)
}

/// The message for a non-200 answer: the body's `Title` (and `Detail`) when present.
pub fn server_failure(status: u16, body: &[u8]) -> String {
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Problem {
        #[serde(rename = "Title", deserialize_with = "string")]
        title: String,
        #[serde(rename = "Detail", deserialize_with = "string")]
        detail: String,
    }
    let problem: Problem = serde_json::from_slice(body).unwrap_or_default();
    // The server's words are outside text (I10): one line each, bounded.
    let mut msg = format!("the update server answered HTTP {status}");
    if !problem.title.is_empty() {
        msg.push_str(&format!(": {}", crate::text::one_line(&problem.title, 200)));
        if !problem.detail.is_empty() {
            msg.push_str(&format!(
                " ({})",
                crate::text::one_line(&problem.detail, 300)
            ));
        }
    }
    msg.push_str("; try again later or check [server] url");
    msg
}

/// A string field; NULs are dropped (D-Bus strings cannot carry them; I10).
fn string<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    Ok(crate::text::no_nul(
        &Option::<String>::deserialize(d)?.unwrap_or_default(),
    ))
}

fn boolean<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<bool, D::Error> {
    match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => Ok(false),
        Some(serde_json::Value::Bool(b)) => Ok(b),
        Some(serde_json::Value::String(s)) if s == "true" => Ok(true),
        Some(serde_json::Value::String(s)) if s == "false" => Ok(false),
        Some(v) => Err(de::Error::custom(format!("expected a boolean, got {v}"))),
    }
}

fn int64<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<i64, D::Error> {
    match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => Ok(0),
        Some(serde_json::Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| de::Error::custom(format!("{n} is not a 64-bit integer"))),
        Some(serde_json::Value::String(s)) => s
            .parse()
            .map_err(|_| de::Error::custom(format!("{s:?} is not a 64-bit integer"))),
        Some(v) => Err(de::Error::custom(format!("expected an integer, got {v}"))),
    }
}

fn status<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<PackageStatus, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => PackageStatus::Released,
        Some(serde_json::Value::Number(n)) => match n.as_i64() {
            Some(0) => PackageStatus::Draft,
            Some(1) => PackageStatus::Pending,
            Some(2) => PackageStatus::Released,
            _ => PackageStatus::Unknown,
        },
        Some(serde_json::Value::String(s)) => match s.as_str() {
            "Draft" => PackageStatus::Draft,
            "Pending" => PackageStatus::Pending,
            "Released" => PackageStatus::Released,
            _ => PackageStatus::Unknown,
        },
        Some(v) => return Err(de::Error::custom(format!("expected a status, got {v}"))),
    })
}

fn packages<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<Offer>, D::Error> {
    Ok(Option::<Vec<Offer>>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_rules() {
        for (base, want) in [
            (
                "https://updatecells.pydio.com/",
                "https://updatecells.pydio.com/a/update-server/",
            ),
            (
                "https://updatecells.pydio.com",
                "https://updatecells.pydio.com/a/update-server/",
            ),
            (
                "http://127.0.0.1:8080/mirror//",
                "http://127.0.0.1:8080/mirror/",
            ),
            ("http://h/a/update-server", "http://h/a/update-server/"),
        ] {
            assert_eq!(endpoint(base).unwrap().as_str(), want, "{base}");
        }
    }

    #[test]
    fn request_has_only_protocol_keys_and_omits_empty_ones() {
        let mut req = UpdateRequest::new(
            crate::package::Channel::Stable,
            crate::package::Package::Home,
            "4.4.2",
        );
        let v: serde_json::Value = serde_json::to_value(&req).unwrap();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            ["Channel", "CurrentVersion", "GOARCH", "GOOS", "PackageName"]
        );
        req.license_info.insert("Key".into(), "abc".into());
        let v: serde_json::Value = serde_json::to_value(&req).unwrap();
        assert_eq!(v["LicenseInfo"]["Key"], "abc");
        assert_eq!(v["GOOS"], "linux");
    }

    #[test]
    fn response_is_read_leniently() {
        let body = br#"{"Channel":"stable","Extra":{"x":1},"AvailableBinaries":[
            {"PackageName":"PydioHome","Version":"4.4.5","BinarySize":"1234","Status":"Released",
             "ReleaseDate":1700000000,"IsPatch":false,"NewField":[1,2]},
            {"PackageName":"PydioHome","Version":"4.4.6","BinarySize":99,"Status":2,"Label":null},
            {"Version":"4.4.7","Status":"Frobbed"}]}"#;
        let r = parse_response(body).unwrap();
        assert_eq!(r.available_binaries.len(), 3);
        assert_eq!(r.available_binaries[0].binary_size, 1234);
        assert_eq!(r.available_binaries[0].status, PackageStatus::Released);
        assert_eq!(r.available_binaries[1].binary_size, 99);
        assert_eq!(r.available_binaries[1].status, PackageStatus::Released);
        assert_eq!(r.available_binaries[1].label, "");
        assert_eq!(r.available_binaries[2].binary_size, 0);
        assert_eq!(r.available_binaries[2].status, PackageStatus::Unknown);
        assert!(parse_response(b"{}").unwrap().available_binaries.is_empty());
        let statuses =
            br#"{"AvailableBinaries":[{"Version":"1.0.0"},{"Status":"Draft"},{"Status":0},
            {"Status":"Pending"},{"Status":1},{"Status":null},{"Label":"a\u0000b"}]}"#;
        let r = parse_response(statuses).unwrap();
        let got: Vec<PackageStatus> = r.available_binaries.iter().map(|p| p.status).collect();
        use PackageStatus::*;
        assert_eq!(
            got,
            [Released, Draft, Draft, Pending, Pending, Released, Released]
        );
        assert_eq!(r.available_binaries[6].label, "ab", "no NUL reaches D-Bus");
    }

    #[test]
    fn malformed_answers_are_server_errors() {
        for body in [
            &b"<html>"[..],
            b"{\"AvailableBinaries\":[{\"BinarySize\":\"12x\"}]}",
            b"",
        ] {
            assert_eq!(parse_response(body).unwrap_err().name(), "ServerError");
        }
    }

    #[test]
    fn failure_message_carries_the_title() {
        let m = server_failure(500, br#"{"Title":"Database down","Detail":"retry"}"#);
        assert!(
            m.contains("500") && m.contains("Database down") && m.contains("retry"),
            "{m}"
        );
        let m = server_failure(502, b"<html>");
        assert!(m.contains("502"), "{m}");
    }
}
