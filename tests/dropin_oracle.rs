//! The drop-in oracle on real systemd: for every drop-in input of the fuzz corpus, the file
//! cells-updater renders is loaded by systemd (one unit per input, one daemon-reload), and
//! the command line systemd stores (`ExecStart`, read back over D-Bus) and the condition
//! path are exactly what the independent reader of `src/fuzzing.rs` says; so that reader,
//! which the fuzzer checks every rendering against, agrees with systemd itself.
#![cfg(feature = "fuzzing")]

mod support;

use cells_updater::fuzzing::{condition_path, exec_start_words};
use std::path::Path;
use support::sandbox::Sandbox;

#[test]
fn systemd_reads_every_rendered_dropin_as_the_oracle_does() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files: Vec<_> = ["seeds", "corpus"]
        .iter()
        .flat_map(|d| {
            std::fs::read_dir(root.join(d).join("dropin"))
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|e| e.path())
        .collect();
    files.sort();
    files.truncate(150);
    let sb = Sandbox::up("dropin-oracle");
    let mut expected = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let data = std::fs::read(f).unwrap();
        let assert_exec = data.first().is_some_and(|b| b & 1 == 1);
        let text = String::from_utf8_lossy(data.get(1..).unwrap_or_default()).to_string();
        let mut fields = text.split('\0').map(str::to_string);
        let binary = format!(
            "/{}",
            fields.next().unwrap_or_default().trim_start_matches('/')
        );
        let args: Vec<String> = fields.take(16).collect();
        let Ok(rendered) = cells_updater::dropin::render_dropin(
            &format!("oracle-{i}.service"),
            Path::new(&binary),
            &args,
            assert_exec,
        ) else {
            continue;
        };
        let exec_line = rendered
            .lines()
            .filter_map(|l| l.strip_prefix("ExecStart="))
            .next_back()
            .unwrap();
        let words = exec_start_words(exec_line).expect("the oracle reads what was rendered");
        let condition = rendered
            .lines()
            .filter_map(|l| l.strip_prefix("AssertFileIsExecutable="))
            .next_back()
            .map(|v| condition_path(v).unwrap());
        sb.write(
            &format!("/etc/systemd/system/oracle-{i}.service"),
            b"[Unit]\nAssertFileIsExecutable=/bin/true\n[Service]\nType=oneshot\nExecStart=/bin/true\n",
            0o644,
        );
        sb.write(
            &format!("/etc/systemd/system/oracle-{i}.service.d/50-cells-updater.conf"),
            rendered.as_bytes(),
            0o644,
        );
        expected.push((i, f.clone(), words, condition));
    }
    assert!(expected.len() >= 3, "no drop-in inputs in fuzz/");
    sb.sh("systemctl daemon-reload");
    for (i, file, words, condition) in &expected {
        let unit = format!("oracle-{i}.service");
        let path = sb.sh(&format!(
            "busctl --json=short call org.freedesktop.systemd1 /org/freedesktop/systemd1 \
             org.freedesktop.systemd1.Manager LoadUnit s {unit}"
        ));
        let path: serde_json::Value = serde_json::from_str(&path).unwrap();
        let path = path["data"][0].as_str().unwrap().to_string();
        let get = |iface: &str, prop: &str| -> serde_json::Value {
            let out = sb.sh(&format!(
                "busctl --json=short get-property org.freedesktop.systemd1 {path} \
                 org.freedesktop.systemd1.{iface} {prop}"
            ));
            serde_json::from_str(&out).unwrap()
        };
        let exec = get("Service", "ExecStart");
        let argv: Vec<String> = exec["data"][0][1]
            .as_array()
            .unwrap_or_else(|| {
                panic!(
                    "{unit} ({}): no ExecStart: {exec}\n{}",
                    file.display(),
                    sb.sh(&format!(
                        "journalctl -b --no-pager -o cat | grep -a '{unit}' | tail -n 5"
                    ))
                )
            })
            .iter()
            .map(|w| w.as_str().unwrap().to_string())
            .collect();
        assert_eq!(&argv, words, "{} ({unit})", file.display());
        assert_eq!(exec["data"][0][0].as_str(), Some(words[0].as_str()));
        let asserts = get("Unit", "Asserts");
        let paths: Vec<&str> = asserts["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a[0] == "AssertFileIsExecutable")
            .map(|a| a[3].as_str().unwrap())
            .collect();
        match condition {
            Some(c) => assert_eq!(paths, [c.as_str()], "{} ({unit})", file.display()),
            None => assert_eq!(paths, ["/bin/true"], "{} ({unit})", file.display()),
        }
    }
}
