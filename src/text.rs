//! Outside text made inert (invariant I10). Text from the update server, from a Cells
//! binary's output or from callers may hold newlines, terminal escape sequences or bidi
//! overrides. Before it reaches `sd_notify`, a journal field or a terminal it goes through
//! one of these functions; D-Bus properties may carry it, but never a NUL.

/// True for characters that change how text is laid out or interpreted rather than what it
/// says: C0/C1 controls, DEL, and the bidirectional overrides and isolates.
fn is_active(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
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
}
