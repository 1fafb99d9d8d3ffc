//! A stand-in for the Cells update server, for the demo and the real-systemd tests: it speaks
//! the same wire protocol (`POST /a/update-server/`, `GET /bin/<name>`), serving releases
//! whose checksums and signatures were made beforehand (by the `openssl` command line).
//!
//!   update_server --listen 127.0.0.1:8080 \
//!       --release VERSION FILE CHECKSUM_B64 SIGNATURE_B64 ... \
//!       [--enterprise-key KEY --enterprise-release VERSION FILE CHECKSUM_B64 SIGNATURE_B64 ...]
//!       [--slow-ms N]   (binaries in 64 KiB pieces, N ms apart: a slow mirror)
//!       [--slow VERSION ...]  (with --slow-ms: only these versions are slow)
//!       [--error-title TEXT]   (every check answers HTTP 503 with this Title)
//!       [--log-requests FILE]  (every request body appended to FILE, one per line)
//!       [--age VERSION SECONDS ...]  (that release's ReleaseDate is SECONDS before now)
//!       [--changelog VERSION FILE ...]  (that release's ChangeLog is FILE's text)
//!
//! Like the real server, it lists only versions newer than the request's CurrentVersion.
//!
//! PydioEnterprise checks get the Enterprise releases when `LicenseInfo.Key` is KEY, and
//! HTTP 403 with a Title otherwise.

#[path = "../tests/support/http.rs"]
mod http;

fn main() {
    let mut args = std::env::args().skip(1);
    let mut listen = "127.0.0.1:8080".to_string();
    let mut enterprise_key = None;
    let mut enterprise = Vec::new();
    let mut entries = Vec::new();
    let mut binaries = Vec::new();
    let mut delivery = http::Delivery::Normal;
    let mut error_title = None;
    let mut log = None;
    let mut slow_only: Vec<String> = Vec::new();
    let mut ages: Vec<(String, i64)> = Vec::new();
    let mut changelogs: Vec<(String, String)> = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next().expect("--listen ADDR"),
            "--slow-ms" => {
                let ms = args.next().expect("--slow-ms N").parse().expect("a number");
                delivery = http::Delivery::Slow {
                    chunk: 64 << 10,
                    delay_ms: ms,
                };
            }
            "--error-title" => error_title = Some(args.next().expect("--error-title TEXT")),
            "--slow" => slow_only.push(args.next().expect("--slow VERSION")),
            "--log-requests" => log = Some(args.next().expect("--log-requests FILE")),
            "--age" => ages.push((
                args.next().expect("--age VERSION"),
                args.next()
                    .expect("--age VERSION SECONDS")
                    .parse()
                    .expect("seconds"),
            )),
            "--changelog" => {
                let v = args.next().expect("--changelog VERSION");
                let f = args.next().expect("--changelog VERSION FILE");
                changelogs.push((
                    v,
                    std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{f}: {e}")),
                ));
            }
            "--enterprise-key" => enterprise_key = Some(args.next().expect("--enterprise-key KEY")),
            "--release" | "--enterprise-release" => {
                let is_enterprise = a == "--enterprise-release";
                let (version, file, sum, sig) = (
                    args.next().expect("VERSION"),
                    args.next().expect("FILE"),
                    args.next().expect("CHECKSUM"),
                    args.next().expect("SIGNATURE"),
                );
                let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{file}: {e}"));
                let name = if is_enterprise {
                    format!("cells-enterprise-{version}")
                } else {
                    format!("cells-{version}")
                };
                let url = format!("http://{listen}/bin/{name}");
                let mut entry = http::package_json(&version, &url, bytes.len(), &sum, &sig, true);
                if is_enterprise {
                    entry["PackageName"] = serde_json::Value::from("PydioEnterprise");
                    enterprise.push(entry);
                } else {
                    entries.push(entry);
                }
                binaries.push((version, name, bytes));
            }
            other => {
                eprintln!("update_server: unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    for e in entries.iter_mut().chain(enterprise.iter_mut()) {
        let v = e["Version"].as_str().unwrap_or_default().to_string();
        if let Some((_, age)) = ages.iter().find(|(a, _)| *a == v) {
            e["ReleaseDate"] = serde_json::Value::from(now - age);
        }
        if let Some((_, text)) = changelogs.iter().find(|(c, _)| *c == v) {
            e["ChangeLog"] = serde_json::Value::from(text.as_str());
        }
    }
    let server = http::TestServer::start_on(&listen);
    server.only_newer();
    if let Some(f) = log {
        server.log_to(std::path::Path::new(&f));
    }
    for (version, name, bytes) in binaries {
        let d = if slow_only.is_empty() || slow_only.contains(&version) {
            delivery.clone()
        } else {
            http::Delivery::Normal
        };
        server.put_binary(&name, bytes, d);
    }
    match &error_title {
        Some(title) => server.set_catalog(
            503,
            serde_json::json!({"Title": title, "Detail": "try later"}).to_string(),
        ),
        None => server.set_catalog(
            200,
            serde_json::json!({"Channel": "stable", "AvailableBinaries": entries}).to_string(),
        ),
    }
    if let Some(key) = enterprise_key {
        server.set_enterprise(
            &key,
            serde_json::json!({"Channel": "stable", "AvailableBinaries": enterprise}).to_string(),
        );
    }
    println!(
        "update server on http://{}/ with {} release(s)",
        server.addr,
        entries.len()
    );
    loop {
        std::thread::park();
    }
}
