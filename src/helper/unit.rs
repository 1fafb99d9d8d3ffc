//! A helper's transient unit: its fixed properties (who it runs as, what it may reach, its
//! limits) and starting and stopping it through systemd's manager.

use crate::error::{Error, Result};
use crate::systemd::{job_end, timed, JobEnd, SystemdManagerProxy, CALL_TIMEOUT};
use std::time::Duration;

/// The fixed properties of a helper's transient unit (see [`crate::helper`]).
pub struct TransientProps<'a> {
    /// `Description=`.
    pub description: String,
    /// `ExecStart=` argv (the first word is the executable).
    pub argv: Vec<String>,
    /// Who it runs as.
    pub rights: super::Rights,
    /// Its standard input and output.
    pub stdin: std::os::fd::BorrowedFd<'a>,
    pub stdout: std::os::fd::BorrowedFd<'a>,
    /// `RuntimeMaxSec=`.
    pub runtime_max: Duration,
    /// `MemoryMax=`.
    pub memory_max: u64,
    /// `Environment=`.
    pub env: Vec<String>,
}

/// `IPAddressDeny=` entries: IPv4 and IPv6 link-local and multicast.
fn link_local_and_multicast() -> Vec<IpPrefix> {
    let v6 = |first: u8, second: u8| {
        let mut a = vec![0u8; 16];
        a[0] = first;
        a[1] = second;
        a
    };
    vec![
        (libc::AF_INET, vec![169, 254, 0, 0], 16),
        (libc::AF_INET, vec![224, 0, 0, 0], 4),
        (libc::AF_INET6, v6(0xfe, 0x80), 10),
        (libc::AF_INET6, v6(0xff, 0x00), 8),
    ]
}

type IpPrefix = (i32, Vec<u8>, u32);

/// `/etc/resolv.conf`, or nothing.
fn resolv_conf() -> String {
    std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()
}

/// The `hosts:` line of `/etc/nsswitch.conf` (`""` when there is none).
fn nss_hosts_line() -> String {
    std::fs::read_to_string("/etc/nsswitch.conf")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("hosts:").map(str::to_string))
        .unwrap_or_default()
}

/// The socket families a network helper may create: `AF_INET` and `AF_INET6` for HTTP(S) and
/// DNS; `AF_UNIX` only when name resolution here goes through a service reached over a local
/// socket (an NSS module other than `files`, `dns` and `myhostname` in the `hosts:` line:
/// `resolve` talks to systemd-resolved over varlink, `mymachines` to machined). Netlink,
/// packet and every other family are never needed.
fn helper_address_families(hosts_line: &str) -> Vec<String> {
    let mut families = vec!["AF_INET".to_string(), "AF_INET6".to_string()];
    let local_service = hosts_line
        .split_whitespace()
        .filter(|w| !w.starts_with('['))
        .any(|m| !matches!(m, "files" | "dns" | "myhostname"));
    if local_service {
        families.push("AF_UNIX".to_string());
    }
    families
}

/// A network helper's IP filter: (`IPAddressDeny=`, `IPAddressAllow=`). Link-local and
/// multicast are always denied; without `loopback`, loopback and unspecified addresses too,
/// except the name servers `resolv_conf` lists on loopback (systemd-resolved's 127.0.0.53,
/// a local dnsmasq): a helper that is made to misbehave cannot reach this host's services.
fn network_filter(loopback: bool, resolv_conf: &str) -> (Vec<IpPrefix>, Vec<IpPrefix>) {
    let mut deny = link_local_and_multicast();
    let mut allow = Vec::new();
    if !loopback {
        let mut v6_loopback = vec![0u8; 16];
        v6_loopback[15] = 1;
        deny.extend([
            (libc::AF_INET, vec![127, 0, 0, 0], 8),
            (libc::AF_INET, vec![0, 0, 0, 0], 8),
            (libc::AF_INET6, v6_loopback, 128),
            (libc::AF_INET6, vec![0u8; 16], 128),
        ]);
        for line in resolv_conf.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("nameserver") {
                continue;
            }
            match words
                .next()
                .and_then(|w| w.parse::<std::net::IpAddr>().ok())
            {
                Some(std::net::IpAddr::V4(v)) if v.is_loopback() => {
                    allow.push((libc::AF_INET, v.octets().to_vec(), 32))
                }
                Some(std::net::IpAddr::V6(v)) if v.is_loopback() => {
                    allow.push((libc::AF_INET6, v.octets().to_vec(), 128))
                }
                _ => {}
            }
        }
    }
    (deny, allow)
}

/// Starts a helper as a transient service with fixed properties and waits for systemd's
/// start job. Nothing in the properties comes from a caller or the update server: the argv is
/// this program and a fixed subcommand; requests travel through standard input.
pub async fn start_transient(
    conn: &zbus::Connection,
    name: &str,
    p: &TransientProps<'_>,
) -> Result<()> {
    use super::Rights;
    use zbus::zvariant::{Fd, Value};
    let fail = |e: String| Error::Internal(format!("cannot start the helper {name}: {e}"));
    let exec: Vec<(String, Vec<String>, bool)> = vec![(p.argv[0].clone(), p.argv.clone(), false)];
    let mut props: Vec<(&str, Value<'_>)> = vec![
        ("Description", Value::from(p.description.clone())),
        ("Type", Value::from("exec")),
        ("ExecStart", Value::from(exec)),
        (
            "StandardInputFileDescriptor",
            Value::from(Fd::from(p.stdin)),
        ),
        (
            "StandardOutputFileDescriptor",
            Value::from(Fd::from(p.stdout)),
        ),
        // A panic or other stray text goes to the journal, never into the framed pipe.
        ("StandardError", Value::from("journal")),
        ("SyslogIdentifier", Value::from("cells-updater")),
        ("Environment", Value::from(p.env.clone())),
        ("CollectMode", Value::from("inactive-or-failed")),
        (
            "RuntimeMaxUSec",
            Value::from(p.runtime_max.as_micros() as u64),
        ),
        ("MemoryMax", Value::from(p.memory_max)),
        ("NoNewPrivileges", Value::from(true)),
        ("CapabilityBoundingSet", Value::from(0u64)),
        ("AmbientCapabilities", Value::from(0u64)),
        ("ProtectSystem", Value::from("strict")),
        ("PrivateTmp", Value::from(true)),
        ("PrivateDevices", Value::from(true)),
        ("ProtectKernelTunables", Value::from(true)),
        ("ProtectKernelModules", Value::from(true)),
        ("ProtectKernelLogs", Value::from(true)),
        ("ProtectControlGroups", Value::from(true)),
        ("ProtectClock", Value::from(true)),
        ("ProtectHostname", Value::from(true)),
        ("RestrictSUIDSGID", Value::from(true)),
        ("RestrictRealtime", Value::from(true)),
        ("LockPersonality", Value::from(true)),
        // No namespace of any kind (the mask of the allowed ones is empty), no IPC with the
        // host, native system calls only.
        ("RestrictNamespaces", Value::from(0u64)),
        ("PrivateIPC", Value::from(true)),
        (
            "SystemCallArchitectures",
            Value::from(vec!["native".to_string()]),
        ),
        ("KillMode", Value::from("control-group")),
    ];
    match &p.rights {
        Rights::Sandbox => {
            props.push(("DynamicUser", Value::from(true)));
            props.push(("PrivateNetwork", Value::from(true)));
            props.push(("ProtectHome", Value::from("yes")));
        }
        Rights::Network { loopback } => {
            props.push(("DynamicUser", Value::from(true)));
            props.push(("ProtectHome", Value::from("yes")));
            // resolv.conf matters only when loopback is filtered.
            let resolv = if *loopback {
                String::new()
            } else {
                resolv_conf()
            };
            let (deny, allow) = network_filter(*loopback, &resolv);
            props.push(("IPAddressDeny", Value::from(deny)));
            let families = helper_address_families(&nss_hosts_line());
            props.push((
                "RestrictAddressFamilies",
                Value::from(zbus::zvariant::Structure::from((true, families))),
            ));
            if !allow.is_empty() {
                props.push(("IPAddressAllow", Value::from(allow)));
            }
        }
        Rights::CellsUser { user, group, rw } => {
            props.push(("User", Value::from(user.clone())));
            if !group.is_empty() {
                props.push(("Group", Value::from(group.clone())));
            }
            props.push(("PrivateNetwork", Value::from(true)));
            props.push(("ProtectHome", Value::from("read-only")));
            if let Some(dir) = rw {
                props.push((
                    "ReadWritePaths",
                    Value::from(vec![dir.display().to_string()]),
                ));
            }
        }
    }
    let m = timed("connecting", SystemdManagerProxy::new(conn)).await?;
    let _ = timed("Subscribe", m.subscribe()).await;
    let mut removed = timed("JobRemoved", m.receive_job_removed()).await?;
    let job = timed(
        &format!("StartTransientUnit({name})"),
        m.start_transient_unit(name, "fail", &props, &[]),
    )
    .await?;
    match job_end(&mut removed, &job, CALL_TIMEOUT).await {
        JobEnd::Result(r) if r == "done" => Ok(()),
        JobEnd::Result(r) => Err(fail(format!(
            "systemd's start job ended with '{r}' (see journalctl -u {name})"
        ))),
        JobEnd::Lost => Err(fail("lost the connection to systemd".into())),
        JobEnd::TimedOut => Err(fail(format!(
            "systemd did not start it within {} s",
            CALL_TIMEOUT.as_secs()
        ))),
    }
}

/// Stops a helper unit (a finished one is already gone: errors are ignored).
pub async fn stop_transient(conn: &zbus::Connection, name: &str) {
    if let Ok(m) = SystemdManagerProxy::new(conn).await {
        let _ = tokio::time::timeout(CALL_TIMEOUT, m.stop_unit(name, "replace")).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_helpers_get_inet_sockets_and_unix_only_for_a_resolver_service() {
        let inet = ["AF_INET", "AF_INET6"];
        assert_eq!(helper_address_families(" files dns"), inet);
        assert_eq!(helper_address_families("files myhostname dns"), inet);
        assert_eq!(helper_address_families(""), inet);
        assert_eq!(
            helper_address_families(" files resolve [!UNAVAIL=return] dns myhostname"),
            ["AF_INET", "AF_INET6", "AF_UNIX"]
        );
        assert_eq!(
            helper_address_families("files mymachines dns"),
            ["AF_INET", "AF_INET6", "AF_UNIX"]
        );
    }

    #[test]
    fn network_helpers_reach_loopback_only_when_needed() {
        let resolv = "# generated\nnameserver 127.0.0.53\nnameserver ::1\nnameserver 192.0.2.1\n\
                      options edns0\nnameserver not-an-ip\n";
        let has = |l: &[IpPrefix], family: i32, first: u8, len: u32| {
            l.iter()
                .any(|(f, a, n)| *f == family && a[0] == first && *n == len)
        };
        // A server on loopback: link-local and multicast only.
        let (deny, allow) = network_filter(true, resolv);
        assert_eq!(deny, link_local_and_multicast());
        assert!(allow.is_empty());
        // A remote server: loopback and unspecified denied too, the loopback name servers
        // allowed (exactly), a remote name server not listed.
        let (deny, allow) = network_filter(false, resolv);
        assert!(has(&deny, libc::AF_INET, 127, 8));
        assert!(has(&deny, libc::AF_INET, 0, 8));
        assert!(deny
            .iter()
            .any(|(f, a, n)| *f == libc::AF_INET6 && a[15] == 1 && *n == 128));
        assert!(has(&deny, libc::AF_INET, 169, 16));
        assert_eq!(
            allow,
            vec![
                (libc::AF_INET, vec![127, 0, 0, 53], 32),
                (
                    libc::AF_INET6,
                    {
                        let mut a = vec![0u8; 16];
                        a[15] = 1;
                        a
                    },
                    128
                ),
            ]
        );
        let (_, allow) = network_filter(false, "");
        assert!(allow.is_empty());
    }
}
