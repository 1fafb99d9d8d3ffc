//! File capabilities: the `security.capability` extended attribute (v2 and v3 formats, as
//! libcap's `setcap` writes them), set and read back through an open file descriptor so the
//! capabilities are on the inode before it becomes visible (invariant I4).

use std::fmt;
use std::os::fd::{AsRawFd, BorrowedFd};

/// The attribute name.
pub const XATTR: &str = "security.capability";
/// `CAP_NET_BIND_SERVICE`.
pub const CAP_NET_BIND_SERVICE: u32 = 10;

const VFS_CAP_REVISION_2: u32 = 0x0200_0000;
const VFS_CAP_REVISION_3: u32 = 0x0300_0000;
const VFS_CAP_REVISION_MASK: u32 = 0xFF00_0000;
const VFS_CAP_FLAGS_EFFECTIVE: u32 = 0x0000_0001;

/// The capability sets of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileCaps {
    /// Permitted set (bit n = capability n).
    pub permitted: u64,
    /// Inheritable set.
    pub inheritable: u64,
    /// The effective bit (`+e`): permitted capabilities are raised at exec.
    pub effective: bool,
    /// v3 only: the root uid of the user namespace the capabilities apply in.
    pub rootid: Option<u32>,
}

impl FileCaps {
    /// `cap_net_bind_service=+ep`.
    pub fn net_bind_service() -> Self {
        FileCaps {
            permitted: 1 << CAP_NET_BIND_SERVICE,
            effective: true,
            ..Default::default()
        }
    }

    /// What of these capabilities cells-updater carries from one binary to the next:
    /// `cap_net_bind_service` only (what Pydio's guide sets), as a v2 attribute; `None` when
    /// that leaves nothing. A capability the old file carries for any other reason (set by
    /// hand, or reported by a filesystem its owner controls) never moves to a root-owned
    /// binary.
    pub fn preservable(&self) -> Option<FileCaps> {
        // A v3 value with a non-zero root id holds in a user namespace only (the kernel
        // writes it for a namespace's root): it is never carried over as a host capability.
        if self.rootid.is_some_and(|r| r != 0) {
            return None;
        }
        let keep = 1u64 << CAP_NET_BIND_SERVICE;
        let c = FileCaps {
            permitted: self.permitted & keep,
            inheritable: self.inheritable & keep,
            effective: self.effective,
            rootid: None,
        };
        (!c.is_empty()).then_some(c)
    }

    /// True when nothing is set.
    pub fn is_empty(&self) -> bool {
        self.permitted == 0 && self.inheritable == 0
    }

    /// Parses an attribute value.
    pub fn decode(b: &[u8]) -> Result<Self, String> {
        let word = |i: usize| -> Result<u32, String> {
            b.get(i * 4..i * 4 + 4)
                .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
                .ok_or_else(|| format!("security.capability is {} bytes, too short", b.len()))
        };
        let magic = word(0)?;
        let (rev, want_len) = match magic & VFS_CAP_REVISION_MASK {
            VFS_CAP_REVISION_2 => (2, 20),
            VFS_CAP_REVISION_3 => (3, 24),
            other => {
                return Err(format!(
                    "unsupported security.capability revision {other:#x}"
                ))
            }
        };
        if b.len() != want_len {
            return Err(format!(
                "security.capability v{rev} must be {want_len} bytes, is {}",
                b.len()
            ));
        }
        Ok(FileCaps {
            permitted: u64::from(word(1)?) | (u64::from(word(3)?) << 32),
            inheritable: u64::from(word(2)?) | (u64::from(word(4)?) << 32),
            effective: magic & VFS_CAP_FLAGS_EFFECTIVE != 0,
            rootid: if rev == 3 { Some(word(5)?) } else { None },
        })
    }

    /// Encodes as v2 (or v3 when a rootid is set), as the kernel and libcap expect.
    pub fn encode(&self) -> Vec<u8> {
        let rev = if self.rootid.is_some() {
            VFS_CAP_REVISION_3
        } else {
            VFS_CAP_REVISION_2
        };
        let magic = rev
            | if self.effective {
                VFS_CAP_FLAGS_EFFECTIVE
            } else {
                0
            };
        let mut words = vec![
            magic,
            self.permitted as u32,
            self.inheritable as u32,
            (self.permitted >> 32) as u32,
            (self.inheritable >> 32) as u32,
        ];
        if let Some(r) = self.rootid {
            words.push(r);
        }
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }
}

const NAMES: &[&str] = &[
    "cap_chown",
    "cap_dac_override",
    "cap_dac_read_search",
    "cap_fowner",
    "cap_fsetid",
    "cap_kill",
    "cap_setgid",
    "cap_setuid",
    "cap_setpcap",
    "cap_linux_immutable",
    "cap_net_bind_service",
    "cap_net_broadcast",
    "cap_net_admin",
    "cap_net_raw",
    "cap_ipc_lock",
    "cap_ipc_owner",
    "cap_sys_module",
    "cap_sys_rawio",
    "cap_sys_chroot",
    "cap_sys_ptrace",
    "cap_sys_pacct",
    "cap_sys_admin",
    "cap_sys_boot",
    "cap_sys_nice",
    "cap_sys_resource",
    "cap_sys_time",
    "cap_sys_tty_config",
    "cap_mknod",
    "cap_lease",
    "cap_audit_write",
    "cap_audit_control",
    "cap_setfcap",
    "cap_mac_override",
    "cap_mac_admin",
    "cap_syslog",
    "cap_wake_alarm",
    "cap_block_suspend",
    "cap_audit_read",
    "cap_perfmon",
    "cap_bpf",
    "cap_checkpoint_restore",
];

impl fmt::Display for FileCaps {
    /// In `getcap`'s style: `cap_net_bind_service=ep`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("(none)");
        }
        let all = self.permitted | self.inheritable;
        let names: Vec<String> = (0..64)
            .filter(|i| all & (1 << i) != 0)
            .map(|i| {
                NAMES
                    .get(i)
                    .map_or_else(|| format!("cap_{i}"), |n| n.to_string())
            })
            .collect();
        let mut flags = String::new();
        if self.effective {
            flags.push('e');
        }
        if self.inheritable != 0 {
            flags.push('i');
        }
        if self.permitted != 0 {
            flags.push('p');
        }
        write!(f, "{}={flags}", names.join(","))
    }
}

fn cname() -> std::ffi::CString {
    // Invariant: XATTR holds no NUL byte.
    std::ffi::CString::new(XATTR).expect("constant without NUL")
}

/// The capabilities of the file open as `fd`; `None` when it has none.
pub fn get(fd: BorrowedFd<'_>) -> std::io::Result<Option<FileCaps>> {
    let mut buf = [0u8; 64];
    // SAFETY: the buffer is valid for its length; fd is open.
    let n = unsafe {
        libc::fgetxattr(
            fd.as_raw_fd(),
            cname().as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENODATA) {
            Ok(None)
        } else {
            Err(e)
        };
    }
    FileCaps::decode(&buf[..n as usize])
        .map(Some)
        .map_err(|m| std::io::Error::new(std::io::ErrorKind::InvalidData, m))
}

/// Sets (or with `None`/empty, removes) the capabilities of the file open as `fd`, then reads
/// them back: an error unless the file now carries exactly `caps`.
pub fn set(fd: BorrowedFd<'_>, caps: Option<&FileCaps>) -> std::io::Result<()> {
    match caps.filter(|c| !c.is_empty()) {
        Some(c) => {
            let v = c.encode();
            // SAFETY: the value is valid for its length; fd is open.
            let r = unsafe {
                libc::fsetxattr(
                    fd.as_raw_fd(),
                    cname().as_ptr(),
                    v.as_ptr().cast(),
                    v.len(),
                    0,
                )
            };
            if r != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        None => {
            // SAFETY: fd is open; the name is a valid C string.
            let r = unsafe { libc::fremovexattr(fd.as_raw_fd(), cname().as_ptr()) };
            if r != 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::ENODATA) {
                    return Err(e);
                }
            }
        }
    }
    let back = get(fd)?;
    let want = caps.copied().filter(|c| !c.is_empty());
    // The kernel may store a v2 value as v3 (or drop the rootid); compare the sets only.
    let same = match (back, want) {
        (None, None) => true,
        (Some(b), Some(w)) => {
            b.permitted == w.permitted
                && b.inheritable == w.inheritable
                && b.effective == w.effective
        }
        _ => false,
    };
    if same {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "file capabilities read back as {} instead of {}",
            back.map_or("(none)".into(), |c| c.to_string()),
            want.map_or("(none)".into(), |c| c.to_string())
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_round_trip_and_display() {
        let c = FileCaps::net_bind_service();
        let b = c.encode();
        assert_eq!(b.len(), 20);
        assert_eq!(&b[..4], &[0x01, 0, 0, 0x02]);
        assert_eq!(FileCaps::decode(&b).unwrap(), c);
        assert_eq!(c.to_string(), "cap_net_bind_service=ep");
    }

    #[test]
    fn only_net_bind_service_is_preservable() {
        // cap_sys_admin (21) and cap_setuid (7) next to cap_net_bind_service, v3 with a rootid.
        let forged = FileCaps {
            permitted: (1 << 21) | (1 << 7) | (1 << CAP_NET_BIND_SERVICE),
            inheritable: 1 << 21,
            effective: true,
            rootid: Some(0),
        };
        assert_eq!(forged.preservable(), Some(FileCaps::net_bind_service()));
        let none = FileCaps {
            permitted: 1 << 21,
            ..Default::default()
        };
        assert_eq!(none.preservable(), None);
        // A user namespace's capability (v3, root id 100000) is not a host capability.
        let namespaced = FileCaps {
            rootid: Some(100000),
            ..FileCaps::net_bind_service()
        };
        assert_eq!(namespaced.preservable(), None);
    }

    #[test]
    fn v3_is_understood() {
        let c = FileCaps {
            rootid: Some(100000),
            ..FileCaps::net_bind_service()
        };
        let b = c.encode();
        assert_eq!(b.len(), 24);
        assert_eq!(b[3], 0x03);
        assert_eq!(FileCaps::decode(&b).unwrap(), c);
    }

    #[test]
    fn malformed_values_are_refused() {
        assert!(FileCaps::decode(&[0; 3]).is_err());
        assert!(FileCaps::decode(&[0, 0, 0, 0x01, 0, 0, 0, 0])
            .unwrap_err()
            .contains("revision"));
        let mut b = FileCaps::net_bind_service().encode();
        b.push(0);
        assert!(FileCaps::decode(&b).unwrap_err().contains("20 bytes"));
    }
}
