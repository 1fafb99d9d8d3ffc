//! The unit-file syntax as systemd reads it, written from systemd.service(5) and
//! systemd.syntax(7), independent of [`crate::systemd`]'s writer: the drop-in oracle
//! ([`crate::fuzzing`]) checks the writer against it, and fleet discovery reads the Cells
//! unit's `Environment=` and `ExecStart=` with it.

/// Expands unit-file specifiers the way systemd does before anything else: `%%` is `%`;
/// any other specifier is refused (cells-updater never writes one).
fn specifiers(value: &str) -> Option<String> {
    undouble(value, '%')
}

/// `value` with each doubled `marker` made single; `None` when a `marker` stands alone.
fn undouble(value: &str, marker: char) -> Option<String> {
    let mut out = String::new();
    let mut it = value.chars();
    while let Some(c) = it.next() {
        if c == marker && it.next()? != marker {
            return None;
        }
        out.push(c);
    }
    Some(out)
}

/// A condition's path as systemd reads it (`AssertFileIsExecutable=`): specifiers
/// expanded, whitespace at the ends dropped, no quoting.
pub fn condition_path(value: &str) -> Option<String> {
    specifiers(value.trim())
}

/// The words of an `ExecStart=` value as systemd stores them (systemd.service(5),
/// "Command lines"): specifiers expanded, then words split on whitespace, with double and
/// single quotes and C escapes (`\n`, `\t`, `\xNN`, `\\`, `\"`, …) removed. `None` for what
/// the writer must never produce: a prefix (`-@:+!|`) on the first word, a lone `;`, an
/// unterminated quote, an unknown escape. `$` is kept: it is expanded when the command runs.
pub fn exec_start_words(value: &str) -> Option<Vec<String>> {
    let value = specifiers(value)?;
    let mut chars = value.chars().peekable();
    let mut words = Vec::new();
    loop {
        while chars.peek().is_some_and(|c| " \t\n\r".contains(*c)) {
            chars.next();
        }
        let Some(&first) = chars.peek() else { break };
        if words.is_empty() && "-@:+!|".contains(first) {
            return None;
        }
        let mut word: Vec<u8> = Vec::new();
        let mut quote: Option<char> = None;
        let mut quoted_any = false;
        loop {
            let Some(c) = chars.next() else {
                if quote.is_some() {
                    return None;
                }
                break;
            };
            match (c, quote) {
                (c, Some(q)) if c == q => quote = None,
                ('"' | '\'', None) => {
                    quote = Some(c);
                    quoted_any = true;
                }
                (' ' | '\t' | '\n' | '\r', None) => break,
                ('\\', _) => word.extend(unescape(&mut chars)?),
                (c, _) => {
                    let mut buf = [0u8; 4];
                    word.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        if !quoted_any && word == b";" {
            return None;
        }
        words.push(String::from_utf8(word).ok()?);
    }
    Some(words)
}

/// One C escape after a backslash.
fn unescape(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<Vec<u8>> {
    let c = chars.next()?;
    let byte = match c {
        'a' => 7,
        'b' => 8,
        'f' => 12,
        'n' => b'\n',
        'r' => b'\r',
        't' => b'\t',
        'v' => 11,
        's' => b' ',
        '\\' | '"' | '\'' => c as u8,
        'x' => {
            let hex: String = [chars.next()?, chars.next()?].iter().collect();
            u8::from_str_radix(&hex, 16).ok().filter(|b| *b != 0)?
        }
        _ => return None,
    };
    Some(vec![byte])
}

/// The argv a command line runs with: [`exec_start_words`], then `$$` as `$` (any other `$`
/// would expand a variable, which the writer never asks for).
pub fn exec_start_argv(value: &str) -> Option<Vec<String>> {
    exec_start_words(value)?
        .into_iter()
        .map(|w| undouble(&w, '$'))
        .collect()
}
