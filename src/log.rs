//! Logging: structured entries to the journal (native protocol) when systemd runs us, plain
//! lines on stderr otherwise.

use std::os::unix::net::UnixDatagram;
use std::sync::OnceLock;

const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

fn journal() -> Option<&'static UnixDatagram> {
    static SOCK: OnceLock<Option<UnixDatagram>> = OnceLock::new();
    SOCK.get_or_init(|| {
        std::env::var_os("JOURNAL_STREAM")?;
        let s = UnixDatagram::unbound().ok()?;
        s.connect(JOURNAL_SOCKET).ok()?;
        Some(s)
    })
    .as_ref()
}

/// Syslog priorities used here.
#[derive(Debug, Clone, Copy)]
pub enum Level {
    /// 3
    Error = 3,
    /// 4
    Warning = 4,
    /// 6
    Info = 6,
}

/// Logs `message` with extra journal fields (`JOB_ID`, `VERSION`, `PHASE`, …).
pub fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
    if let Some(sock) = journal() {
        let mut entry = format!(
            "PRIORITY={}\nSYSLOG_IDENTIFIER=cells-updater\nMESSAGE={}\n",
            level as u8,
            message.replace('\n', " ")
        );
        for (k, v) in fields {
            entry.push_str(&format!("{k}={}\n", v.replace('\n', " ")));
        }
        if sock.send(entry.as_bytes()).is_ok() {
            return;
        }
    }
    let extra: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let tag = match level {
        Level::Error => "error",
        Level::Warning => "warning",
        Level::Info => "info",
    };
    if extra.is_empty() {
        eprintln!("cells-updater[{tag}]: {message}");
    } else {
        eprintln!("cells-updater[{tag}]: {message} ({})", extra.join(" "));
    }
}

/// Info-level shorthand.
pub fn info(message: &str, fields: &[(&str, &str)]) {
    log(Level::Info, message, fields)
}
