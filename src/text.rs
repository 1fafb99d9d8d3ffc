//! Outside text made inert (invariant I10). Text from the update server, from a Cells
//! binary's output or from callers may hold newlines, terminal escape sequences or bidi
//! overrides. Before it reaches `sd_notify`, a journal field or a terminal it goes through
//! one of these functions; D-Bus properties may carry it, but never a NUL.

/// True for characters that change how text is laid out or interpreted rather than what it
/// says: C0/C1 controls, DEL, and the bidirectional overrides and isolates.
fn is_active(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// True when `s` holds a control, DEL or bidi character (text that is not inert).
pub fn has_active(s: &str) -> bool {
    s.chars().any(is_active)
}

/// One line, for `STATUS=`, journal fields and one-line terminal output: every control
/// character becomes a space, and the result is cut to `max` characters (with `…`).
pub fn one_line(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max + 3));
    for (n, c) in s.chars().enumerate() {
        if n == max {
            out.push('…');
            break;
        }
        out.push(if is_active(c) { ' ' } else { c });
    }
    out
}

/// Several lines, for changelogs on a terminal: line feeds and tabs stay, carriage returns
/// and every other control character go.
pub fn multi_line(s: &str) -> String {
    s.chars()
        .filter(|&c| c == '\n' || c == '\t' || !is_active(c))
        .collect()
}

/// One JSON document for a terminal or a script (`--json`): serde_json escapes only the
/// characters below 0x20, so DEL, the C1 controls and the bidi overrides and isolates are
/// escaped here too (`\u009b`), wherever they are in the document. They can only be inside
/// strings, so the result is the same JSON value.
pub fn json(v: &serde_json::Value) -> String {
    let text = v.to_string();
    if !text.chars().any(is_active) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if is_active(c) {
            // Every active character is in the Basic Multilingual Plane: one \uXXXX.
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// For D-Bus strings, which cannot carry NUL: NULs are dropped, the rest is kept as sent.
pub fn no_nul(s: &str) -> String {
    if s.contains('\0') {
        s.replace('\0', "")
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injected_lines_and_escapes_are_neutralised() {
        let hostile = "Database down\nMAINPID=1\nSTOPPING=1\x1b[2J\u{202E}gnp.exe\r\0";
        let line = one_line(hostile, 200);
        assert!(!line.contains('\n') && !line.contains('\x1b') && !line.contains('\r'));
        assert!(!line.contains('\u{202E}') && !line.contains('\0'));
        assert_eq!(line, "Database down MAINPID=1 STOPPING=1 [2J gnp.exe  ");
        assert_eq!(one_line("abcdef", 3), "abc…");
        assert_eq!(multi_line("a\r\nb\t\x1b[31mred\x07"), "a\nb\t[31mred");
        assert_eq!(no_nul("a\0b\nc"), "ab\nc");
    }

    #[test]
    fn json_escapes_every_active_character_and_stays_the_same_value() {
        let hostile = "x\u{1b}[2Jy\u{7f}z\u{9b}31m\u{202e}gnp\u{2066}w\u{85}";
        let v = serde_json::json!({"k": hostile, "list": [hostile]});
        let text = json(&v);
        assert!(!text.chars().any(is_active), "{text:?}");
        assert!(text.contains("\\u001b") && text.contains("\\u007f") && text.contains("\\u009b"));
        assert!(text.contains("\\u202e") && text.contains("\\u2066") && text.contains("\\u0085"));
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, v);
        assert_eq!(
            json(&serde_json::json!({"a": "plain é"})),
            r#"{"a":"plain é"}"#
        );
    }
}
