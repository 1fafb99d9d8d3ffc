//! Man pages and shell completions, generated from the CLI definition (`cells-updater(8)`,
//! bash/zsh/fish) and from dist/config.toml (`cells-updater.conf(5)`), whose keys and
//! defaults a test checks against the parser: neither can drift from the program.

use super::Cli;
use clap::CommandFactory;
use std::fmt::Write;
use std::path::Path;

/// The shipped configuration file, documented key by key.
const CONFIG: &str = include_str!("../../dist/config.toml");

/// Writes `man/cells-updater.8`, `man/cells-updater.conf.5` and `completions/*` under `out`.
pub fn generate(out: &Path) -> std::io::Result<()> {
    let man = out.join("man");
    let comp = out.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&comp)?;
    let cmd = Cli::command();
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .section("8")
        .render(&mut page)?;
    page.extend_from_slice(EXTRA_8.as_bytes());
    page.extend_from_slice(dbus_section().as_bytes());
    page.extend_from_slice(SEE_ALSO_8.as_bytes());
    std::fs::write(man.join("cells-updater.8"), page)?;
    std::fs::write(man.join("cells-updater.conf.5"), config_man(CONFIG))?;
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        clap_complete::generate_to(shell, &mut cmd.clone(), "cells-updater", &comp)?;
    }
    Ok(())
}

/// Sections appended to the generated cells-updater(8).
const EXTRA_8: &str = r#".SH "EXIT STATUS"
0 success; 1 the operation failed (the message names the D-Bus error); 2 usage error;
3 the daemon is unreachable.
.SH FILES
.TP
/etc/cells-updater/config.toml, /etc/cells-updater/config.d/*.toml
Configuration, see \fBcells-updater.conf\fR(5).
.TP
/etc/cells-updater/keys.d/*.pem
Trusted signing keys (RSA PKCS#1 or SPKI, EC P-256).
.TP
/var/lib/cells-updater
State, staged releases and kept binaries for rollback.
"#;

/// The last section of cells-updater(8).
const SEE_ALSO_8: &str = r#".SH "SEE ALSO"
\fBcells-updater.conf\fR(5), \fBsystemctl\fR(1), \fBbusctl\fR(1), \fBpolkit\fR(8)
"#;

/// cells-updater(8)'s D-BUS section, from the contract's names.
fn dbus_section() -> String {
    use cells_updater::contract::{self, polkit_action};
    format!(
        ".SH \"D-BUS\"\nThe daemon owns \\fB{}\\fR on the system bus, object\n{}, interface {}. Root \
         and the\nCells unit's User= may check, stage, apply with the default options and \
         install the license;\nanyone else, and the Cells user beyond those, needs the polkit \
         actions\n{}.\n",
        contract::BUS_NAME,
        contract::MANAGER_PATH,
        contract::MANAGER_INTERFACE,
        polkit_action::ALL.join(", ")
    )
}

fn roff(text: &str) -> String {
    let t = text.replace('\\', "\\e");
    if t.starts_with('.') || t.starts_with('\'') {
        format!("\\&{t}")
    } else {
        t
    }
}

/// cells-updater.conf(5) from the shipped, commented configuration.
pub fn config_man(config: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        ".TH CELLS-UPDATER.CONF 5 \"\" \"cells-updater {}\" \"File Formats\"\n.SH NAME\ncells-updater.conf \\- configuration of cells-updater\n.SH SYNOPSIS\n/etc/cells-updater/config.toml\n.br\n/etc/cells-updater/config.d/*.toml\n.SH DESCRIPTION",
        env!("CARGO_PKG_VERSION")
    );
    let mut pending: Vec<String> = Vec::new();
    let mut in_header = true;
    for line in config.lines() {
        let l = line.trim();
        if let Some(section) = l.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            if in_header {
                out.push_str(
                    &pending
                        .iter()
                        .map(|p| roff(p))
                        .collect::<Vec<_>>()
                        .join("\n"),
                );
                out.push_str("\n.SH KEYS\n");
                in_header = false;
            }
            pending.clear();
            out.push_str(&format!(".SS [{section}]\n"));
        } else if let Some(kv) = l
            .strip_prefix('#')
            .filter(|r| r.contains(" = ") && !r.starts_with(' '))
        {
            let (k, v) = kv.split_once(" = ").unwrap_or((kv, ""));
            out.push_str(&format!(
                ".TP\n\\fB{k}\\fR = {}\n{}\n",
                roff(v),
                roff(&pending.join(" "))
            ));
            pending.clear();
        } else if let Some(c) = l.strip_prefix('#') {
            pending.push(c.trim().to_string());
        } else if l.is_empty() && in_header {
            pending.push(String::new());
        }
    }
    out.push_str(".SH \"SEE ALSO\"\n\\fBcells-updater\\fR(8)\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_and_completions_cover_every_command_and_key() {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path()).unwrap();
        let page = std::fs::read_to_string(dir.path().join("man/cells-updater.8")).unwrap();
        for sub in Cli::command()
            .get_subcommands()
            .filter(|s| !s.is_hide_set())
        {
            let roff_name = sub.get_name().replace('-', "\\-");
            assert!(
                page.contains(&roff_name),
                "cells-updater(8) lacks {}",
                sub.get_name()
            );
        }
        assert!(page.contains("EXIT STATUS"));
        let see_also = page.find(".SH \"SEE ALSO\"").unwrap();
        let dbus = page.find(".SH \"D-BUS\"").unwrap();
        assert!(dbus < see_also, "SEE ALSO comes last");
        for name in [cells_updater::contract::BUS_NAME]
            .into_iter()
            .chain(cells_updater::contract::polkit_action::ALL)
        {
            assert!(page[dbus..see_also].contains(name), "D-BUS lacks {name}");
        }
        let conf = std::fs::read_to_string(dir.path().join("man/cells-updater.conf.5")).unwrap();
        for key in [
            "unit",
            "url",
            "keys_dir",
            "max_binary_size",
            "auto",
            "capabilities",
            "health_url",
            "idle_exit",
            "probe_user",
        ] {
            assert!(
                conf.contains(&format!("\\fB{key}\\fR = ")),
                "cells-updater.conf(5) lacks {key}"
            );
        }
        assert!(conf.contains(".SS [policy]"));
        for f in ["cells-updater.bash", "_cells-updater", "cells-updater.fish"] {
            let text = std::fs::read_to_string(dir.path().join("completions").join(f)).unwrap();
            assert!(text.contains("upgrade-enterprise"), "{f}");
        }
    }
}
