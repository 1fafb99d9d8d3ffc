//! The module graph, drawn from the code's own `crate::` and `super::` paths: no cycle, and no
//! module names one of a higher layer (docs/architecture.md, "Layers"). A module's own
//! `#[cfg(test)] mod tests` and comments are left out; `mod` declarations are structure, not
//! imports.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Lowest first. A module not listed takes the layer of its longest listed prefix.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "foundation",
        &[
            "contract",
            "error",
            "text",
            "log",
            "failpoint",
            "version",
            "package",
            "cancel",
            "dirfd",
            "dropin",
            "fcaps",
            "schedule",
            "unit_syntax",
            "trust",
            "wire",
            "helper::protocol",
        ],
    ),
    ("systemd and the helper runner", &["systemd", "helper"]),
    (
        "operations",
        &[
            "net",
            "license",
            "cells_config",
            "probe",
            "update_server",
            "stage",
            "install",
            "health",
            "config",
            "settings",
            "policy",
            "state",
            "host",
            "metrics",
            "fleet",
        ],
    ),
    ("the helper's router", &["helper::child"]),
    ("services", &["daemon", "doctor", "fleet::agent"]),
    ("front ends", &["cli", "fuzzing", ""]),
];

fn layer_of(module: &str) -> Option<usize> {
    let mut best: Option<(usize, usize)> = None; // (prefix length, layer)
    for (i, (_, mods)) in LAYERS.iter().enumerate() {
        for m in *mods {
            let hit = module == *m || (!m.is_empty() && module.starts_with(&format!("{m}::")));
            if hit && best.is_none_or(|(len, _)| m.len() >= len) {
                best = Some((m.len(), i));
            }
        }
    }
    best.map(|(_, l)| l)
}

/// `src/a/b.rs` and `src/a/b/mod.rs` → `a::b`; lib.rs and main.rs → `""`.
fn module_of(rel: &Path) -> String {
    let mut parts: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().to_string())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts.join("::")
}

/// The code of a file without comments and its unit-test module.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident_path(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == ':')
        .collect::<String>()
        .trim_end_matches(':')
        .to_string()
}

/// Every module path `code` names, `module` being where it is.
fn references(module: &str, code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let parent: Vec<&str> = {
        let mut p: Vec<&str> = module.split("::").filter(|s| !s.is_empty()).collect();
        p.pop();
        p
    };
    for (marker, base) in [("crate::", Vec::new()), ("super::", parent)] {
        for (i, _) in code.match_indices(marker) {
            // `foo_crate::` is not `crate::`.
            if code[..i]
                .chars()
                .last()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                continue;
            }
            let rest = &code[i + marker.len()..];
            let mut paths = Vec::new();
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    paths.push(ident_path(item.trim()));
                }
            } else {
                paths.push(ident_path(rest));
            }
            for p in paths {
                let mut full: Vec<String> = base.iter().map(|s| s.to_string()).collect();
                full.extend(p.split("::").filter(|s| !s.is_empty()).map(String::from));
                out.push(full.join("::"));
            }
        }
    }
    out
}

/// The graph: module → the modules it names (each reference resolved to the longest module
/// that exists).
fn graph(files: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let mut g = BTreeMap::new();
    for (m, text) in files {
        let mut to = BTreeSet::new();
        // `crate::Error` and the like: an item the crate root re-exports, not a module.
        for r in references(m, &code(text))
            .into_iter()
            .filter(|r| !r.is_empty())
        {
            let parts: Vec<&str> = r.split("::").collect();
            let target = (1..=parts.len())
                .rev()
                .map(|k| parts[..k].join("::"))
                .find(|c| files.contains_key(c));
            if let Some(t) = target {
                if t != *m {
                    to.insert(t);
                }
            }
        }
        g.insert(m.clone(), to);
    }
    g
}

/// Every edge that points up a layer, and every module in a cycle.
fn problems(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut out = Vec::new();
    for (a, tos) in g {
        let Some(la) = layer_of(a) else {
            out.push(format!("{a:?} is in no layer: add it to LAYERS"));
            continue;
        };
        for b in tos {
            if let Some(lb) = layer_of(b) {
                if lb > la {
                    out.push(format!(
                        "{a} ({}) names {b} ({}), a higher layer",
                        LAYERS[la].0, LAYERS[lb].0
                    ));
                }
            }
        }
    }
    // A cycle: a module that reaches itself.
    for start in g.keys() {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<&String> = g[start].iter().collect();
        while let Some(m) = stack.pop() {
            if m == start {
                out.push(format!("{start} is in a cycle"));
                break;
            }
            if seen.insert(m.clone()) {
                stack.extend(g.get(m).into_iter().flatten());
            }
        }
    }
    out
}

fn sources() -> BTreeMap<String, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    let mut dirs = vec![src.clone()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let m = module_of(p.strip_prefix(&src).unwrap());
                let text = std::fs::read_to_string(&p).unwrap();
                files
                    .entry(m)
                    .and_modify(|t: &mut String| t.push_str(&text))
                    .or_insert(text);
            }
        }
    }
    files
}

#[test]
fn the_module_graph_has_no_cycle_and_no_upward_import() {
    let files = sources();
    assert!(files.len() > 40, "read {} modules", files.len());
    let g = graph(&files);
    let edges: usize = g.values().map(BTreeSet::len).sum();
    assert!(edges > 100, "only {edges} edges: the reader is broken");
    let p = problems(&g);
    assert!(p.is_empty(), "{}", p.join("\n"));
}

#[test]
fn the_check_sees_an_upward_import_a_cycle_and_an_unlisted_module() {
    let mut files = BTreeMap::new();
    files.insert("error".to_string(), "pub enum Error {}".to_string());
    files.insert(
        "net".to_string(),
        "use crate::error::Error;\n// crate::daemon in a comment\n".to_string(),
    );
    files.insert("daemon".to_string(), "use crate::{net, error};".to_string());
    assert!(problems(&graph(&files)).is_empty());
    // The network layer reaching up into the daemon, in a group import.
    files.insert(
        "net".to_string(),
        "use crate::{error::Error, daemon::Thing};".to_string(),
    );
    let p = problems(&graph(&files));
    assert!(
        p.iter()
            .any(|l| l.contains("net (operations) names daemon (services)")),
        "{p:?}"
    );
    assert!(p.iter().any(|l| l.contains("net is in a cycle")), "{p:?}");
    // `super::` resolves from where it is written.
    files.insert("helper::child".to_string(), String::new());
    files.insert("helper".to_string(), String::new());
    files.insert(
        "helper::protocol".to_string(),
        "use super::child::route;".to_string(),
    );
    let p = problems(&graph(&files));
    assert!(
        p.iter()
            .any(|l| l.contains("helper::protocol (foundation) names helper::child")),
        "{p:?}"
    );
    files.insert("newthing".to_string(), String::new());
    let p = problems(&graph(&files));
    assert!(
        p.iter().any(|l| l.contains("\"newthing\" is in no layer")),
        "{p:?}"
    );
}
