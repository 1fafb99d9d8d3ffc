//! The drop-in that points the Cells unit at the binary cells-updater installed: its text,
//! written so that systemd reads back exactly the path and arguments meant (each word quoted
//! the way systemd splits an `ExecStart=` line), or refused when it cannot be.

use crate::error::{Error, Result};
use std::path::Path;

/// Quotes one ExecStart word the way systemd parses it: specifiers (`%`) and variables
/// (`$`) doubled, and in double quotes, backslash, quote and control characters C-escaped,
/// so the word can neither split, expand nor end the line.
fn quote_word(w: &str) -> String {
    if !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-=:,+@".contains(c))
    {
        return w.to_string();
    }
    let mut out = String::from("\"");
    for c in w.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\x{b:02x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// True for an absolute path to a file, written the one way systemd keeps it and within its
/// limits: at least one component, none empty, `.` or `..` (systemd simplifies `a//b` and
/// `a/./b` when it loads a path, so another spelling would read back as another string),
/// no trailing slash, components of at most 255 bytes and the whole under 4096 (beyond, systemd
/// drops the line as an invalid path), and no control character, DEL, quote or backslash
/// (systemd refuses such an executable name: "contains special characters").
pub fn is_plain_path(path: &str) -> bool {
    path.len() < 4096
        && path.starts_with('/')
        && !path
            .chars()
            .any(|c| c.is_control() || matches!(c, '"' | '\'' | '\\'))
        && path[1..]
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && c.len() <= 255)
}

/// The drop-in that points `unit` at `binary`, keeping the original arguments; with
/// `assert_executable`, `AssertFileIsExecutable=` is pointed there too.
pub fn render_dropin(
    unit: &str,
    binary: &Path,
    args: &[String],
    assert_executable: bool,
) -> Result<String> {
    let path = binary.display().to_string();
    if !is_plain_path(&path)
        || path.contains('\0')
        || args.iter().any(|a| a.contains('\0'))
        || unit.chars().any(|c| c.is_control())
    {
        return Err(Error::SwapFailed(format!(
            "cannot point {} at {:?}: a unit's command line holds no NUL and starts with a \
             plain absolute path (no //, . or ..)",
            crate::text::one_line(unit, 80),
            crate::text::one_line(&path, 200)
        )));
    }
    let mut out = format!(
        "# Managed by cells-updater: it points {unit} at the Cells binary it installed.\n\
         # cells-updater rewrites or removes this file; do not edit it.\n"
    );
    if assert_executable {
        // A condition's value is a plain path (specifiers expanded, no quoting), so it must
        // hold nothing a unit file reads otherwise: no control character, no backslash (a
        // line continuation at the end), no whitespace at the ends (trimmed).
        if path.chars().any(|c| c.is_control() || c == '\\') || path.trim() != path {
            return Err(Error::SwapFailed(format!(
                "cannot write AssertFileIsExecutable= for {:?}: rename the binary's directory",
                crate::text::one_line(&path, 200)
            )));
        }
        out.push_str(&format!(
            "\n[Unit]\nAssertFileIsExecutable=\nAssertFileIsExecutable={}\n",
            path.replace('%', "%%")
        ));
    }
    let mut line = quote_word(&binary.display().to_string());
    for a in args {
        line.push(' ');
        line.push_str(&quote_word(a));
    }
    out.push_str(&format!("\n[Service]\nExecStart=\nExecStart={line}\n"));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden file: the exact bytes of the drop-in for an Enterprise binary.
    #[test]
    fn dropin_golden() {
        let got = render_dropin(
            "cells.service",
            Path::new("/opt/pydio/bin/cells-enterprise"),
            &["start".to_string()],
            true,
        )
        .unwrap();
        assert_eq!(got, include_str!("../tests/golden/50-cells-updater.conf"));
    }

    #[test]
    fn a_path_systemd_would_respell_is_refused() {
        for p in [
            "/opt/pydio//bin/cells",
            "/opt/./cells",
            "/opt/../cells",
            "/opt/cells/",
            "cells",
        ] {
            assert!(!is_plain_path(p), "{p}");
            let e = render_dropin("cells.service", Path::new(p), &[], false).unwrap_err();
            assert!(e.message().contains("plain absolute path"), "{e}");
        }
        assert!(is_plain_path("/opt/pydio/bin/cells-enterprise"));
    }

    #[test]
    fn dropin_quotes_what_systemd_would_split_or_expand() {
        let got = render_dropin(
            "cells.service",
            Path::new("/opt/my cells/cells"),
            &[
                "--log=%h".into(),
                "a$b".into(),
                "".into(),
                "two\nlines\u{7f}".into(),
            ],
            false,
        )
        .unwrap();
        assert!(
            got.ends_with(
                "ExecStart=\"/opt/my cells/cells\" \"--log=%%h\" \"a$$b\" \"\" \"two\\nlines\\x7f\"\n"
            ),
            "{got}"
        );
        assert!(!got.contains("[Unit]"));
        assert!(render_dropin("cells.service", Path::new("/x\0"), &[], false).is_err());
        assert!(render_dropin("cells.service", Path::new("rel"), &[], false).is_err());
    }
}
