//! `cells-updater doctor` and `config` on a real systemd: a host set up as Pydio's guide says
//! (user pydio owning /opt/pydio, the capability set once, cells.service) gives the expected
//! lines and exit 0; each broken host (no unit, no capability, the server down, the binary's
//! directory owned by another user) gives its failure and exit 1, and doctor changes nothing
//! on disk. Cells' own pydio.json is followed for the URL and channel, its key only reported,
//! and an explicit setting wins.

mod support;

use support::sandbox::Sandbox;

const GET: &str = "busctl get-property com.pydio.CellsUpdater1 /com/pydio/CellsUpdater1 com.pydio.CellsUpdater1.Manager";

/// Runs doctor; returns the exit status and the report's lines.
fn doctor(sb: &Sandbox) -> (bool, Vec<String>) {
    let (ok, out, err) = sb.try_sh("cells-updater doctor");
    assert!(
        err.trim().is_empty(),
        "doctor writes its report on stdout: {err}"
    );
    (ok, out.lines().map(str::to_string).collect())
}

/// The line of check `name`, which must have `level`.
fn line<'a>(lines: &'a [String], level: &str, name: &str) -> &'a str {
    lines
        .iter()
        .find(|l| l.split_whitespace().take(2).eq([level, name]))
        .unwrap_or_else(|| panic!("no `{level} {name}` line in:\n{}", lines.join("\n")))
}

/// Everything doctor could touch: the binary's directory and the working directory.
fn snapshot(sb: &Sandbox) -> String {
    sb.sh(
        "stat -c '%n %U %a %s %Y' /opt/pydio /opt/pydio/bin /opt/pydio/bin/* /var/cells /var/cells/* 2>/dev/null; \
         getcap /opt/pydio/bin/cells",
    )
}

fn pydio_guide_host(name: &str) -> Sandbox {
    let sb = Sandbox::cells_host(name, &[("4.4.3", "ok")]);
    // Pydio's guide: the Cells user owns /opt/pydio; the timer as the package enables it.
    sb.sh(
        "chown -R pydio:pydio /opt/pydio && setcap cap_net_bind_service=+ep /opt/pydio/bin/cells \
         && systemctl enable --now cells-updater-check.timer",
    );
    sb
}

#[test]
fn doctor_on_a_pydio_guide_host_then_on_broken_ones() {
    let sb = pydio_guide_host("doctor");
    let before = snapshot(&sb);
    let (ok, lines) = doctor(&sb);
    let report = lines.join("\n");
    assert!(ok, "a healthy host passes:\n{report}");
    assert!(line(&lines, "ok", "unit")
        .contains("cells.service: active (running), runs /opt/pydio/bin/cells as pydio"));
    assert!(
        line(&lines, "ok", "binary-dir").contains("the first update adopts them"),
        "pydio owns /opt/pydio: adoption is announced"
    );
    assert!(line(&lines, "ok", "version").contains("the binary reports 4.4.2"));
    assert!(line(&lines, "ok", "capability").contains("cap_net_bind_service"));
    assert!(line(&lines, "ok", "working-dir").contains("/var/cells"));
    assert!(line(&lines, "ok", "license").contains("Cells Home needs none"));
    assert!(line(&lines, "ok", "keys").contains("87e83f48c1a0a720 rsa-2048 (vendor)"));
    assert!(line(&lines, "ok", "server").contains("http://127.0.0.1:8080/ answers: 4.4.3"));
    assert!(line(&lines, "ok", "disk").contains("MiB free"));
    assert!(line(&lines, "ok", "timer").contains("next run 20"));
    assert!(line(&lines, "ok", "sandbox").contains("transient units"));
    assert!(line(&lines, "ok", "daemon").contains("answers on the system bus"));
    assert!(lines.last().unwrap().contains("0 failures"), "{report}");
    // Scripts get the same report.
    let doc: serde_json::Value =
        serde_json::from_str(&sb.sh("cells-updater doctor --json")).unwrap();
    assert_eq!(doc["ok"], true);
    let checks = doc["checks"].as_array().unwrap();
    assert_eq!(
        checks.len(),
        lines.len() - 1 - report.matches(" fix: ").count()
    );
    assert!(checks
        .iter()
        .any(|c| c["check"] == "server" && c["level"] == "ok"));
    assert_eq!(snapshot(&sb), before, "doctor changed nothing on disk");

    // Broken hosts, one at a time: (what breaks it, the failing check, what it says, undo).
    let rows: &[(&str, &str, &str, &str)] = &[
        (
            "printf '[cells]\\nunit = \"cellz.service\"\\n' > /etc/cells-updater/config.d/70-broken.toml",
            "unit",
            "cellz.service is not-found",
            "rm /etc/cells-updater/config.d/70-broken.toml",
        ),
        (
            "setcap -r /opt/pydio/bin/cells",
            "capability",
            "no cap_net_bind_service",
            "setcap cap_net_bind_service=+ep /opt/pydio/bin/cells",
        ),
        // A capability written for a user namespace's root (v3, root id 1000) grants nothing
        // on the host, and the daemon does not carry it over: not "updates keep it".
        (
            "setcap -n 1000 cap_net_bind_service=+ep /opt/pydio/bin/cells",
            "capability",
            "user namespace only",
            "setcap cap_net_bind_service=+ep /opt/pydio/bin/cells",
        ),
        (
            "systemctl stop update-server.service",
            "server",
            "http://127.0.0.1:8080/",
            "true",
        ),
        (
            "useradd --system mallory && chown mallory /opt/pydio/bin",
            "binary-dir",
            "mallory",
            "chown pydio /opt/pydio/bin",
        ),
    ];
    for (breaks, check, says, undo) in rows {
        sb.sh(breaks);
        let before = snapshot(&sb);
        let (ok, lines) = doctor(&sb);
        assert!(!ok, "{check}: doctor exits non-zero:\n{}", lines.join("\n"));
        let l = line(&lines, "FAIL", check);
        assert!(l.contains(says), "{check}: {l}");
        assert!(
            lines.iter().any(|l| l.trim_start().starts_with("fix: ")),
            "{check}: a fix is given"
        );
        assert_eq!(
            snapshot(&sb),
            before,
            "{check}: doctor changed nothing on disk"
        );
        sb.sh(undo);
    }
    // The directory owned by another user is refused, not adopted, by the daemon too.
    let (ok, _, err) = sb.try_sh(
        "useradd --system mallory2 && chown mallory2 /opt/pydio/bin && cells-updater update 4.4.3",
    );
    assert!(!ok);
    assert!(err.contains("UnsafePath"), "{err}");
}

#[test]
fn cells_own_update_settings_are_followed_and_its_key_only_reported() {
    let sb = pydio_guide_host("doctor-pydio-json");
    let k = support::keys();
    let ec_pub = std::fs::read_to_string(&k.ec_pub).unwrap();
    let ec_id = sb
        .sh(&format!(
            "printf '%s' '{ec_pub}' | openssl pkey -pubin -outform DER | sha256sum | cut -c1-64"
        ))
        .trim()
        .to_string();
    // No explicit URL: Cells' own setting (the local server) is the one followed.
    sb.write(
        "/etc/cells-updater/config.d/50-test.toml",
        b"[policy]\nhealth_settle = \"2s\"\nhealth_timeout = \"30s\"\n",
        0o644,
    );
    let pydio_json = serde_json::json!({
        "defaults": {"update": {"updateUrl": "http://127.0.0.1:8080/", "publicKey": ec_pub}},
        "services": {"pydio.grpc.update": {"channel": "dev"}},
    });
    sb.write(
        "/var/cells/pydio.json",
        pydio_json.to_string().as_bytes(),
        0o600,
    );
    sb.sh("chown pydio:pydio /var/cells/pydio.json && systemctl stop cells-updater.service");

    let doc: serde_json::Value =
        serde_json::from_str(&sb.sh("cells-updater config --json")).unwrap();
    assert_eq!(doc["server"]["url"], "http://127.0.0.1:8080/");
    assert_eq!(doc["server"]["source"], "Cells' pydio.json");
    assert_eq!(doc["channel"]["value"], "dev");
    assert_eq!(doc["channel"]["source"], "Cells' pydio.json");
    assert_eq!(doc["cells_config"]["key"]["id"], ec_id.as_str());
    assert_eq!(doc["cells_config"]["key"]["trusted"], false);
    let sources: Vec<&str> = doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources, ["etc", "vendor"]);
    assert!(
        !doc["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["id"] == ec_id.as_str()),
        "pydio.json's key is not trusted"
    );
    let text = sb.sh("cells-updater config");
    assert!(
        text.contains("update server  http://127.0.0.1:8080/  (Cells' pydio.json)"),
        "{text}"
    );
    assert!(
        text.contains("to trust it: cells-updater config --cells-key"),
        "{text}"
    );
    assert_eq!(
        sb.sh("cells-updater config --cells-key").trim(),
        ec_pub.trim()
    );
    // The daemon follows it too: its Channel, and a check reaches the server pydio.json names.
    assert_eq!(sb.sh(&format!("{GET} Channel")).trim(), "s \"dev\"");
    let check = sb.sh("cells-updater check --json");
    assert!(check.contains("\"4.4.3\""), "{check}");
    let (_, lines) = doctor(&sb);
    assert!(line(&lines, "warn", "pydio-json").contains("not trusted"));

    // An explicit setting wins.
    sb.write(
        "/etc/cells-updater/config.d/80-explicit.toml",
        b"[server]\nurl = \"http://127.0.0.1:9/\"\nchannel = \"stable\"\n",
        0o644,
    );
    let doc: serde_json::Value =
        serde_json::from_str(&sb.sh("cells-updater config --json")).unwrap();
    assert_eq!(doc["server"]["url"], "http://127.0.0.1:9/");
    assert_eq!(doc["server"]["source"], "/etc/cells-updater");
    assert_eq!(doc["channel"]["source"], "/etc/cells-updater");
    // follow_cells_config = false: defaults again, and the key is not even reported.
    sb.write(
        "/etc/cells-updater/config.d/80-explicit.toml",
        b"[server]\nfollow_cells_config = false\n",
        0o644,
    );
    let doc: serde_json::Value =
        serde_json::from_str(&sb.sh("cells-updater config --json")).unwrap();
    assert_eq!(doc["server"]["source"], "default");
    assert_eq!(doc["server"]["url"], "https://updatecells.pydio.com/");
    assert!(doc["cells_config"]["key"].is_null());

    // The Cells user hides a terminal escape around its key and adds a second key block:
    // nothing of its text reaches the terminal, every key's id is shown, more than one is
    // warned about, and `--cells-key` prints none of them.
    sb.sh("rm /etc/cells-updater/config.d/80-explicit.toml");
    let rsa_pub = std::fs::read_to_string(&k.rsa_pkcs1_pub).unwrap();
    let hostile = format!("\u{1b}]0;owned\u{7}\u{1b}[2J\n{ec_pub}\u{9b}31m\u{202e}\n{rsa_pub}");
    let pydio_json = serde_json::json!({
        "defaults": {"update": {"updateUrl": "http://127.0.0.1:8080/", "publicKey": hostile}},
    });
    sb.write(
        "/var/cells/pydio.json",
        pydio_json.to_string().as_bytes(),
        0o600,
    );
    sb.sh("chown pydio:pydio /var/cells/pydio.json");
    let active = |t: &str| {
        t.chars().any(|c| {
            (c.is_control() && c != '\n')
                || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
        })
    };
    let json_text = sb.sh("cells-updater config --json");
    assert!(!active(&json_text), "{json_text:?}");
    let doc: serde_json::Value = serde_json::from_str(&json_text).unwrap();
    let ids = doc["cells_config"]["key"]["ids"].as_array().unwrap();
    assert_eq!(ids.len(), 2, "{doc}");
    assert_eq!(ids[0], ec_id.as_str());
    let text = sb.sh("cells-updater config");
    assert!(!active(&text), "{text:?}");
    assert!(text.contains("holds 2 keys"), "{text}");
    assert!(text.contains(&ec_id[..16]), "{text}");
    let (ok, out, err) = sb.try_sh("cells-updater config --cells-key");
    assert!(!ok && out.is_empty(), "a key was printed: {out}");
    assert!(err.contains("holds 2 keys"), "{err}");
    let (_, lines) = doctor(&sb);
    assert!(
        line(&lines, "warn", "pydio-json").contains("holds 2 keys"),
        "{lines:?}"
    );
    let doctor_json = sb.try_sh("cells-updater doctor --json").1;
    assert!(!active(&doctor_json), "{doctor_json:?}");
}
