//! Fuzz targets (cargo feature `fuzzing`): each takes arbitrary bytes, runs one parser on
//! them, and checks the properties that parser promises; a violation panics. `fuzz/` runs
//! them under AFL++ (`cargo afl`), and `tests/fuzz_corpora.rs` replays the kept corpora in
//! CI. Also here: an ExecStart reader written from systemd's documented quoting rules,
//! independent of [`crate::systemd`]'s writer, as the drop-in oracle.

use crate::config::Config;
use crate::package::{BadRelease, Package};
use crate::policy;
use crate::stage::Release;
use crate::state::{Journal, Persistent};
use crate::update_server;
use crate::version::{CellsVersion, VersionBounds};
use std::cmp::Ordering;
use std::path::Path;
use std::time::Duration;

/// A fuzz target: bytes in, a panic when a property does not hold.
pub type Target = fn(&[u8]);

/// Every target, by name (the corpus directory's name).
pub const TARGETS: &[(&str, Target)] = &[
    ("update_response", update_response),
    ("keys", keys),
    ("version", version),
    ("config", config),
    ("elf", elf),
    ("state", state),
    ("dropin", dropin),
];

fn v(s: &str) -> CellsVersion {
    CellsVersion::parse(s).expect("a literal version")
}

/// 1. The update server's answer, through to the policy's verdicts: a verdict for every
///    entry, an allowed one newer than the floor, under the pin, not bad, downloadable.
pub fn update_response(data: &[u8]) {
    let Ok(resp) = update_server::parse_response(data) else {
        return;
    };
    let bounds = VersionBounds {
        installed: Some(v("4.4.2")),
        committed: Some(v("4.4.3")),
    };
    let bad = [BadRelease::new(Package::Home, v("4.4.5"))];
    let ctx = policy::Context {
        package: Package::Home,
        bounds: &bounds,
        bad: &bad,
        max_binary_size: 1 << 30,
        server_url: "https://updatecells.pydio.com/",
        download_hosts: &[],
        now: 1_800_000_000,
        min_age: Duration::from_secs(86_400),
        pin: Some(v("4.9.0")),
        force: false,
    };
    let assessed: Vec<policy::Assessed> = resp
        .available_binaries
        .iter()
        .map(|p| policy::assess(p, &ctx))
        .collect();
    for a in &assessed {
        // A refusal's reason is a `policy::Reason`: one of the contract's spellings by type.
        if !a.allowed() {
            continue;
        }
        let version = a.version.clone().expect("an allowed release has a version");
        assert!(version > v("4.4.3") && version <= v("4.9.0"), "{version}");
        assert!(!policy::is_bad(&bad, Package::Home, &version));
        let r = Release::from_offer(&a.package, ctx.package, ctx.server_url, ctx.download_hosts)
            .expect("an allowed release can be downloaded");
        assert!(r.url.scheme() == "https", "{}", r.url);
        assert!(r.size > 0 && r.size <= 1 << 30);
    }
    let allowed = policy::allowed_versions(&assessed);
    assert!(
        allowed.windows(2).all(|w| w[0] < w[1]),
        "ascending, once each"
    );
}

/// 2. PEM/DER public keys, and the base64 of checksums and signatures: a key that parses
///    has a 64-hex id and a known algorithm, and checking any signature with it is safe.
pub fn keys(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(keys) = crate::trust::parse_pem_keys(&text, "fuzz") {
        let digest = crate::trust::sha256_reader(data).expect("memory").0;
        for k in &keys {
            assert_eq!(k.id.len(), 64);
            assert!(k
                .id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
            assert!(k.algorithm() == "ec-p256" || k.algorithm().starts_with("rsa-"));
            let _ = k.accepts(&digest, data);
        }
    }
    if let Ok(d) = crate::trust::decode_checksum(&text) {
        assert_eq!(
            crate::trust::decode_checksum(&crate::trust::encode_checksum(&d)).ok(),
            Some(d)
        );
    }
    let _ = crate::trust::decode_b64("fuzz", &text);
}

/// 3. Cells versions: display then parse gives the same version, and the order is total
///    (antisymmetric, transitive) on up to three versions separated by newlines.
pub fn version(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let vs: Vec<CellsVersion> = text
        .split('\n')
        .take(3)
        .filter_map(|s| CellsVersion::parse(s).ok())
        .collect();
    for a in &vs {
        let again = CellsVersion::parse(&a.to_string()).expect("a displayed version parses");
        assert_eq!(&again, a);
        assert_eq!(again.cmp(a), Ordering::Equal);
        for b in &vs {
            assert_eq!(a.cmp(b), b.cmp(a).reverse(), "{a} vs {b}");
            assert_eq!(a == b, a.cmp(b) == Ordering::Equal);
            for c in &vs {
                if a <= b && b <= c {
                    assert!(a <= c, "{a} <= {b} <= {c}");
                }
            }
        }
    }
}

/// 4. The configuration, as fragments separated by NUL (`config.toml`, then `config.d`): an
///    accepted one has windows that make a schedule and durations that are valid.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut cfg = Config::default();
    for (i, fragment) in text.split('\0').take(4).enumerate() {
        if cfg.apply(fragment, &format!("fuzz-{i}.toml")).is_err() {
            return;
        }
    }
    cfg.schedule().expect("accepted windows make a schedule");
    assert!(!cfg.health_timeout.is_zero());
    assert!(cfg.state_dir.is_absolute());
    assert!(cfg.metrics_file.as_ref().is_none_or(|p| p.is_absolute()));
}

/// 5. The ELF header check: it never panics, and accepts only an ELF header of this
///    machine's class, byte order and architecture.
pub fn elf(data: &[u8]) {
    if crate::probe::check_elf_header(data).is_ok() {
        assert!(data.len() >= 20 && data.starts_with(b"\x7fELF"));
        assert_eq!(data[4], 2, "64-bit");
        assert_eq!(data[5], 1, "little-endian");
    }
}

/// 6. The persisted state and apply journal: a damaged file is an error, never a panic; a
///    journal that loads holds versions that read back as themselves, and one that passes
///    its check names paths that make sense.
pub fn state(data: &[u8]) {
    if let Ok(doc) = crate::state::parse_doc::<Persistent>(data) {
        let _ = doc.state.as_str();
    }
    if let Ok(j) = crate::state::parse_doc::<Journal>(data) {
        // What loads is typed: its version text reads back as the same version.
        let text = j.to_version.to_string();
        assert_eq!(
            CellsVersion::parse(&text).ok().as_ref(),
            Some(&j.to_version)
        );
        if j.check().is_ok() {
            assert!(Path::new(&j.target).is_absolute());
            assert_eq!(
                Path::new(&j.target).parent(),
                Path::new(&j.old_binary).parent()
            );
            assert!(!j.target.contains(".."));
        }
    }
}

/// 7. The drop-in: fields separated by NUL (the binary, then its arguments; a first byte
///    that is odd asks for `AssertFileIsExecutable=`). What is rendered reads back, by the
///    independent reader below, as exactly that command line, or it is refused.
pub fn dropin(data: &[u8]) {
    let assert_exec = data.first().is_some_and(|b| b & 1 == 1);
    let text = String::from_utf8_lossy(data.get(1..).unwrap_or_default());
    let mut fields = text.split('\0').map(str::to_string);
    let binary = format!(
        "/{}",
        fields.next().unwrap_or_default().trim_start_matches('/')
    );
    let args: Vec<String> = fields.take(16).collect();
    let Ok(rendered) =
        crate::dropin::render_dropin("cells.service", Path::new(&binary), &args, assert_exec)
    else {
        // Only a path systemd would respell, or one no condition can hold, is refused.
        assert!(assert_exec || !crate::dropin::is_plain_path(&binary));
        return;
    };
    let lines: Vec<&str> = rendered.lines().collect();
    let exec: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("ExecStart="))
        .collect();
    assert_eq!(exec.len(), 2, "{rendered}");
    assert_eq!(exec[0], "");
    let mut want = vec![binary.clone()];
    want.extend(args);
    assert_eq!(exec_start_argv(exec[1]).as_ref(), Some(&want), "{rendered}");
    let asserts: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("AssertFileIsExecutable="))
        .collect();
    if assert_exec {
        assert_eq!(asserts.len(), 2);
        assert_eq!(condition_path(asserts[1]).as_deref(), Some(binary.as_str()));
    } else {
        assert!(asserts.is_empty());
    }
    // Nothing else became a line: comments, two section headers at most, the settings.
    assert!(lines.iter().all(|l| l.is_empty()
        || l.starts_with('#')
        || *l == "[Unit]"
        || *l == "[Service]"
        || l.starts_with("ExecStart=")
        || l.starts_with("AssertFileIsExecutable=")));
}

pub use crate::unit_syntax::{condition_path, exec_start_argv, exec_start_words};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reader_follows_systemds_documented_examples() {
        // systemd.service(5): ExecStart=/bin/echo "one" 'two' "three four"
        assert_eq!(
            exec_start_words(r#"/bin/echo "one" 'two' "three four""#).unwrap(),
            ["/bin/echo", "one", "two", "three four"]
        );
        assert_eq!(
            exec_start_words(r#"/bin/echo a"b c"d \x41 "\n""#).unwrap(),
            ["/bin/echo", "ab cd", "A", "\n"]
        );
        assert_eq!(exec_start_words("/x %%h $$A").unwrap(), ["/x", "%h", "$$A"]);
        assert_eq!(exec_start_argv("/x $$A").unwrap(), ["/x", "$A"]);
        assert!(exec_start_words("-/bin/x").is_none());
        assert!(exec_start_words("/bin/x ; /bin/y").is_none());
        assert!(exec_start_words("/bin/x \"open").is_none());
        assert!(exec_start_words("/x %h").is_none());
        assert!(exec_start_argv("/x $HOME").is_none());
    }

    #[test]
    fn every_target_takes_empty_and_tiny_inputs() {
        for (_, target) in TARGETS {
            for input in [&b""[..], b"\0", b"\xff\xfe", b"{}", b"\x7fELF"] {
                target(input);
            }
        }
    }
}
