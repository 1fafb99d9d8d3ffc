//! Finding the cluster's etcd in the Cells unit (docs/fleet.md, "Discovery"): Cells in
//! cluster mode is started with `--registry etcd://HOST:PORT/PREFIX` or the environment
//! variable `CELLS_REGISTRY` (and `--config`/`CELLS_CONFIG` the same for its configuration).
//! When `[fleet]` names no endpoints, the agent and the `fleet` commands use the ones Cells
//! uses, so a node joins its cluster's etcd with nothing more to set up.
//!
//! The unit is read from systemd when it knows it (its `Environment=` and `ExecStart=` as
//! systemd resolved them), else from the unit file and its drop-ins under the usual unit
//! directories. Only `etcd://` (plain) and `etcd+tls://`/`etcds://` (TLS, with `[fleet]`'s
//! CA and client certificate) registries count; anything else (`mem://`, `grpc://`) means
//! "not a cluster".

use super::FleetConfig;
use std::path::Path;

/// Endpoints and prefix found, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// etcd client URLs (`http://` or `https://`).
    pub endpoints: Vec<String>,
    /// The key prefix, `""` or `/…`.
    pub prefix: String,
    /// Where they came from, for `doctor` and the agent's log.
    pub source: String,
}

/// The endpoints and prefix of an etcd registry URL (`etcd://h1:2379,h2:2379/prefix`);
/// `None` for any other scheme or a malformed URL.
pub fn registry(url: &str) -> Option<(Vec<String>, String)> {
    let (scheme, rest) = url.trim().split_once("://")?;
    let http = match scheme {
        "etcd" => "http",
        "etcd+tls" | "etcds" => "https",
        _ => return None,
    };
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (hosts, path) = match rest.split_once('/') {
        Some((h, p)) => (h, p.trim_matches('/')),
        None => (rest, ""),
    };
    let mut endpoints = Vec::new();
    for h in hosts.split(',') {
        // host:port, [v6]:port or host; `:2379` alone is this machine.
        let h = if h.starts_with(':') {
            format!("127.0.0.1{h}")
        } else {
            h.to_string()
        };
        let ok = !h.is_empty()
            && h.len() <= 255
            && !h.contains('@')
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-_:[]".contains(&b));
        if !ok {
            return None;
        }
        let with_port = if h
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            h
        } else {
            format!("{h}:2379")
        };
        endpoints.push(format!("{http}://{with_port}"));
    }
    let prefix_ok = path.len() <= 200
        && !path.split('/').any(|s| s == "..")
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b));
    if !prefix_ok {
        return None;
    }
    let prefix = if path.is_empty() {
        String::new()
    } else {
        format!("/{path}")
    };
    Some((endpoints, prefix))
}

/// The registry the unit names, from its environment (`NAME=value` entries) and its
/// `ExecStart` arguments: `CELLS_REGISTRY`, `--registry`, then `CELLS_CONFIG`, `--config`.
pub fn from_facts(environment: &[String], exec_args: &[String]) -> Option<Found> {
    let env = |name: &str| {
        environment
            .iter()
            .rev()
            .find_map(|e| e.strip_prefix(name)?.strip_prefix('='))
            .map(str::to_string)
    };
    let flag = |name: &str| {
        let mut found = None;
        let mut it = exec_args.iter();
        while let Some(a) = it.next() {
            for dashes in ["--", "-"] {
                let long = format!("{dashes}{name}");
                if *a == long {
                    found = it.next().cloned();
                } else if let Some(v) = a.strip_prefix(&format!("{long}=")) {
                    found = Some(v.to_string());
                }
            }
        }
        found
    };
    let candidates = [
        ("Environment=CELLS_REGISTRY", env("CELLS_REGISTRY")),
        ("ExecStart --registry", flag("registry")),
        ("Environment=CELLS_CONFIG", env("CELLS_CONFIG")),
        ("ExecStart --config", flag("config")),
    ];
    candidates.into_iter().find_map(|(what, v)| {
        let (endpoints, prefix) = registry(&v?)?;
        Some(Found {
            endpoints,
            prefix,
            source: format!("cells.service {what}"),
        })
    })
}

/// The unit directories, in systemd's order of precedence.
const UNIT_DIRS: [&str; 4] = [
    "etc/systemd/system",
    "run/systemd/system",
    "usr/lib/systemd/system",
    "lib/systemd/system",
];

/// `Environment=` entries and the `ExecStart=` arguments of `unit`, read from its file and
/// drop-ins under `root` (what systemd would load, for the two settings read here).
pub fn read_unit(root: &Path, unit: &str) -> Option<(Vec<String>, Vec<String>)> {
    let main = UNIT_DIRS
        .iter()
        .map(|d| root.join(d).join(unit))
        .find(|p| p.is_file())?;
    let mut files = vec![main];
    let mut dropins: Vec<std::path::PathBuf> = UNIT_DIRS
        .iter()
        .filter_map(|d| std::fs::read_dir(root.join(d).join(format!("{unit}.d"))).ok())
        .flat_map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "conf"))
        .collect();
    // Drop-ins apply in file-name order whatever their directory.
    dropins.sort_by_key(|p| p.file_name().map(|n| n.to_os_string()));
    files.extend(dropins);
    let mut env = Vec::new();
    let mut exec: Vec<String> = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).ok()?;
        apply_unit_text(&text, &mut env, &mut exec);
    }
    Some((env, exec.into_iter().skip(1).collect()))
}

/// Applies one unit file's `[Service]` `Environment=` and `ExecStart=` lines.
fn apply_unit_text(text: &str, env: &mut Vec<String>, exec: &mut Vec<String>) {
    let joined = text.replace("\\\n", " ");
    let mut service = false;
    for line in joined.lines().map(str::trim) {
        if line.starts_with('[') {
            service = line == "[Service]";
            continue;
        }
        if !service || line.starts_with(['#', ';']) {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        match k.trim() {
            "Environment" if v.is_empty() => env.clear(),
            "Environment" => {
                let words = crate::unit_syntax::exec_start_words(v)
                    .unwrap_or_else(|| v.split_whitespace().map(str::to_string).collect());
                env.extend(words);
            }
            "ExecStart" if v.is_empty() => exec.clear(),
            "ExecStart" => {
                let v = v.trim_start_matches(['-', '@', ':', '+', '!', '|']);
                if let Some(words) = crate::unit_syntax::exec_start_words(v) {
                    *exec = words;
                }
            }
            _ => {}
        }
    }
}

/// Fills `cfg`'s endpoints and prefix from the unit when `[fleet]` names none; `Err` with
/// the admin's sentence when neither says where etcd is.
pub fn complete(cfg: &mut FleetConfig, found: Option<Found>) -> crate::error::Result<()> {
    if !cfg.endpoints.is_empty() {
        return Ok(());
    }
    let Some(f) = found else {
        return Err(crate::error::Error::FleetUnavailable(
            "[fleet] names no endpoints and cells.service names no etcd registry \
             (CELLS_REGISTRY or --registry etcd://HOST:PORT/PREFIX): set [fleet] endpoints"
                .into(),
        ));
    };
    cfg.endpoints = f.endpoints;
    if cfg.prefix.is_empty() {
        cfg.prefix = f.prefix;
    }
    cfg.source = f.source;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A registry URL and what it gives: (endpoints, prefix), or nothing.
    type Row<'a> = (&'a str, Option<(&'a [&'a str], &'a str)>);

    #[test]
    fn etcd_registries_give_endpoints_and_a_prefix() {
        let rows: &[Row] = &[
            (
                "etcd://127.0.0.1:2379/cells",
                Some((&["http://127.0.0.1:2379"], "/cells")),
            ),
            (
                "etcd://a:2379,b:2379/x/y/",
                Some((&["http://a:2379", "http://b:2379"], "/x/y")),
            ),
            ("etcd://node1", Some((&["http://node1:2379"], ""))),
            (":2379", None),
            ("etcd://:2379", Some((&["http://127.0.0.1:2379"], ""))),
            (
                "etcd+tls://e.example:2379/c?tlsCAFile=/x",
                Some((&["https://e.example:2379"], "/c")),
            ),
            ("mem://", None),
            ("grpc://h:8030", None),
            ("etcd://u:pw@h:2379/c", None),
            ("etcd://h:2379/../x", None),
            ("etcd://h:2379/a b", None),
            ("etcd://h\u{1b}[2J:2379", None),
            ("etcd:///c", None),
        ];
        for (url, want) in rows {
            let got = registry(url);
            let want = want.map(|(e, p)| {
                (
                    e.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                    p.to_string(),
                )
            });
            assert_eq!(got, want, "{url}");
        }
    }

    #[test]
    fn the_unit_names_its_registry_in_its_environment_or_its_flags() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let f = from_facts(&s(&["A=1", "CELLS_REGISTRY=etcd://h:2379/cells"]), &[]).unwrap();
        assert_eq!(f.endpoints, ["http://h:2379"]);
        assert_eq!(f.prefix, "/cells");
        assert_eq!(f.source, "cells.service Environment=CELLS_REGISTRY");
        let f = from_facts(&[], &s(&["start", "--registry", "etcd://h:1/p"])).unwrap();
        assert_eq!(
            (f.endpoints, f.source.as_str()),
            (s(&["http://h:1"]), "cells.service ExecStart --registry")
        );
        let f = from_facts(&[], &s(&["start", "--registry=etcd://h:1"])).unwrap();
        assert_eq!(f.prefix, "");
        let f = from_facts(&s(&["CELLS_CONFIG=etcd://c:2379/conf"]), &[]).unwrap();
        assert_eq!(f.source, "cells.service Environment=CELLS_CONFIG");
        assert_eq!(
            from_facts(&s(&["CELLS_REGISTRY=mem://"]), &s(&["start"])),
            None
        );
        assert_eq!(
            from_facts(&s(&["CELLS_WORKING_DIR=/x"]), &s(&["start"])),
            None
        );
    }

    #[test]
    fn unit_files_and_drop_ins_are_read_in_systemds_order() {
        let root = tempfile::tempdir().unwrap();
        let lib = root.path().join("lib/systemd/system");
        let etc = root.path().join("etc/systemd/system/cells.service.d");
        std::fs::create_dir_all(&lib).unwrap();
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(
            lib.join("cells.service"),
            "[Unit]\nEnvironment=IGNORED=1\n[Service]\nEnvironment=\"CELLS_REGISTRY=mem://\" \
             B=2\nExecStart=/opt/pydio/bin/cells start \\\n  --log info\n",
        )
        .unwrap();
        let (env, args) = read_unit(root.path(), "cells.service").unwrap();
        assert_eq!(env, ["CELLS_REGISTRY=mem://", "B=2"]);
        assert_eq!(args, ["start", "--log", "info"]);
        assert_eq!(from_facts(&env, &args), None);
        std::fs::write(
            etc.join("50-cluster.conf"),
            "[Service]\nEnvironment=CELLS_REGISTRY=etcd://10.0.0.5:2379/cells\n",
        )
        .unwrap();
        std::fs::write(
            etc.join("90-exec.conf"),
            "[Service]\nExecStart=\nExecStart=/opt/pydio/bin/cells-enterprise start\n",
        )
        .unwrap();
        let (env, args) = read_unit(root.path(), "cells.service").unwrap();
        assert_eq!(args, ["start"]);
        let f = from_facts(&env, &args).unwrap();
        assert_eq!(f.endpoints, ["http://10.0.0.5:2379"]);
        assert_eq!(read_unit(root.path(), "other.service"), None);
    }

    #[test]
    fn configured_endpoints_win_and_none_anywhere_is_a_clear_error() {
        let mut cfg = FleetConfig {
            endpoints: vec!["https://e:2379".into()],
            ..FleetConfig::default()
        };
        let found = from_facts(&["CELLS_REGISTRY=etcd://h:2379/c".into()], &[]);
        complete(&mut cfg, found.clone()).unwrap();
        assert_eq!(cfg.endpoints, ["https://e:2379"]);
        assert_eq!(cfg.source, "[fleet] endpoints");
        let mut cfg = FleetConfig::default();
        complete(&mut cfg, found).unwrap();
        assert_eq!(
            (cfg.endpoints[0].as_str(), cfg.prefix.as_str()),
            ("http://h:2379", "/c")
        );
        let mut cfg = FleetConfig::default();
        let e = complete(&mut cfg, None).unwrap_err();
        assert!(e.message().contains("CELLS_REGISTRY"), "{e}");
    }
}
