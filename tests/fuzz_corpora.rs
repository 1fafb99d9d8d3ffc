//! CI's share of the fuzzing (fuzz/README.md): every kept input (the seeds and the corpora
//! the AFL++ campaign minimized) goes through its target again, so a regression of any
//! property fails here. And the versions of the corpus are ordered as hashicorp/go-version
//! (what Cells uses) orders them, checked by a small Go program against Debian's package.
#![cfg(feature = "fuzzing")]

use std::path::{Path, PathBuf};

fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut out = Vec::new();
    for dir in ["seeds", "corpus"] {
        if let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) {
            out.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_file()));
        }
    }
    out.sort();
    out
}

#[test]
fn every_kept_input_replays_without_a_finding() {
    for (name, target) in cells_updater::fuzzing::TARGETS {
        let files = inputs(name);
        assert!(files.len() >= 3, "{name}: no corpus (fuzz/seeds/{name})");
        for f in &files {
            let bytes = std::fs::read(f).unwrap();
            if let Err(e) = std::panic::catch_unwind(|| target(&bytes)) {
                let why = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                panic!("{name}: {} fails: {why}", f.display());
            }
        }
    }
}

#[test]
fn versions_are_ordered_as_go_version_orders_them() {
    use cells_updater::version::CellsVersion;
    // Every version line of the version corpus, and some of Cells' own.
    let mut versions: Vec<String> = [
        "4.4.2",
        "4.4.10",
        "v4.4.3",
        "4.0.0-rc1",
        "4.0.0-rc.2",
        "4.0.0-beta",
        "4.0.0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for f in inputs("version") {
        let text = String::from_utf8_lossy(&std::fs::read(f).unwrap()).to_string();
        versions.extend(text.split('\n').take(3).map(str::to_string));
    }
    versions.retain(|v| CellsVersion::parse(v).is_ok() && !v.contains('\t'));
    versions.sort();
    versions.dedup();
    versions.truncate(400);
    let mut pairs = Vec::new();
    for a in &versions {
        for b in &versions {
            pairs.push((a.clone(), b.clone()));
        }
    }
    let input: String = pairs.iter().map(|(a, b)| format!("{a}\t{b}\n")).collect();
    let helper = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/goversion/main.go");
    let out = std::process::Command::new("go")
        .args(["run", helper.to_str().unwrap()])
        .env("GO111MODULE", "off")
        .env("GOPATH", "/usr/share/gocode")
        .env(
            "GOCACHE",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-cache"),
        )
        .env("GOFLAGS", "")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(input.as_bytes())?;
            c.wait_with_output()
        })
        .expect("go (golang-go and golang-github-hashicorp-go-version-dev, from tests/deps.sh)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(answers.len(), pairs.len());
    let (mut compared, mut differ) = (0, Vec::new());
    for ((a, b), go) in pairs.iter().zip(&answers) {
        let Ok(go) = go.parse::<i32>() else { continue };
        let (va, vb) = (
            CellsVersion::parse(a).unwrap(),
            CellsVersion::parse(b).unwrap(),
        );
        // Where go-version has no order to agree with, ours follows semver (see
        // CellsVersion's Ord). go-version decides at the first part that differs, and there it
        // is not a total order when: one pre-release ends first (a dot-prefix of the other:
        // `alpha` sorts after `alpha.beta` but before `alpha.1`, a cycle); both parts are numbers of
        // equal value spelled differently (`01`, `1`: each is less than the other); or a part
        // looks numeric but overflows int64 (ParseInt's clamped value is still compared).
        let pre = |s: &str| {
            s.split_once('-')
                .map(|(_, p)| p.split('+').next().unwrap_or("").to_string())
        };
        if let (Some(pa), Some(pb)) = (pre(a), pre(b)) {
            if go_version_has_no_order(&pa, &pb) {
                continue;
            }
        }
        compared += 1;
        let ours = va.cmp(&vb) as i32;
        if ours != go {
            differ.push(format!("{a} vs {b}: ours {ours}, go-version {go}"));
        }
    }
    assert!(
        compared > 100,
        "only {compared} pairs in the shared grammar"
    );
    assert!(
        differ.is_empty(),
        "{} of {compared} pairs differ:\n{}",
        differ.len(),
        differ.join("\n")
    );
}

/// True when hashicorp/go-version's comparison of the pre-releases `a` and `b` falls where it
/// is not a total order (see the caller).
fn go_version_has_no_order(a: &str, b: &str) -> bool {
    let (pa, pb): (Vec<&str>, Vec<&str>) = (a.split('.').collect(), b.split('.').collect());
    let Some(i) = (0..pa.len().max(pb.len())).find(|&i| pa.get(i) != pb.get(i)) else {
        return false;
    };
    let (Some(x), Some(y)) = (pa.get(i), pb.get(i)) else {
        return true;
    };
    let overflows = |id: &str| {
        let digits = id.trim_start_matches(['+', '-']);
        id.len() - digits.len() <= 1
            && !digits.is_empty()
            && digits.bytes().all(|c| c.is_ascii_digit())
            && id.parse::<i64>().is_err()
    };
    let same_value = matches!((x.parse::<i64>(), y.parse::<i64>()), (Ok(m), Ok(n)) if m == n);
    same_value || overflows(x) || overflows(y)
}
