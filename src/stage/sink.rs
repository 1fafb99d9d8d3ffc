//! The hashing writer a download or a copy goes through, and the copy from a descriptor.

use super::*;

/// Hashing writer: bytes are hashed as they are written, never held.
pub(super) struct Sink {
    pub(super) file: File,
    pub(super) hasher: Sha256,
    pub(super) written: u64,
    /// End of the range whose writeback has been started.
    pub(super) kicked: u64,
}

/// Writeback of the partial starts after each this many bytes (write-behind, as dpkg does),
/// so the final `fsync` waits for the last window only, not for the whole binary.
const WRITE_BEHIND: u64 = 8 << 20;

impl Sink {
    /// Opens the partial for appending at `offset`; the existing prefix is hashed again (a
    /// partial is never trusted), anything past `offset` is cut.
    pub(super) fn open(work: &Dir, offset: u64) -> std::io::Result<Sink> {
        let mut file = work.open_rw(PART, true)?;
        let mut hasher = Sha256::new();
        file.set_len(offset)?;
        if offset > 0 {
            hash_prefix(&mut file, &mut hasher, offset)?;
        }
        file.seek(std::io::SeekFrom::Start(offset))?;
        Ok(Sink {
            file,
            hasher,
            written: offset,
            kicked: offset,
        })
    }

    pub(super) fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.hasher.update(chunk);
        self.file.write_all(chunk)?;
        self.written += chunk.len() as u64;
        if self.written - self.kicked >= WRITE_BEHIND {
            // Only starts writeback (no wait); a failure here changes nothing, as `finish`
            // syncs the whole file anyway.
            // SAFETY: a plain system call on a descriptor this Sink owns.
            unsafe {
                libc::sync_file_range(
                    self.file.as_raw_fd(),
                    self.kicked as libc::off64_t,
                    (self.written - self.kicked) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
            self.kicked = self.written;
        }
        Ok(())
    }

    pub(super) fn finish(self) -> std::io::Result<(Sha256Digest, u64)> {
        self.file.sync_all()?;
        Ok((self.hasher.finalize().into(), self.written))
    }
}

pub(super) fn hash_prefix(file: &mut File, hasher: &mut Sha256, len: u64) -> std::io::Result<()> {
    file.seek(std::io::SeekFrom::Start(0))?;
    let mut buf = vec![0u8; CHUNK];
    let mut left = len;
    while left > 0 {
        let want = left.min(CHUNK as u64) as usize;
        let n = file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "partial download shrank",
            ));
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(())
}

pub(super) fn copy_file_into(
    file: File,
    work: &Dir,
    max: u64,
    expected: u64,
    cancel: &Cancel,
) -> Result<(Sha256Digest, u64)> {
    let io =
        |e: std::io::Error| Error::from_io(&e, "copying the offered file", Error::DownloadFailed);
    let mut sink = Sink::open(work, 0).map_err(io)?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        cancel.check()?;
        // From the start, whatever the caller left the descriptor's offset at.
        let n = match std::os::unix::fs::FileExt::read_at(&file, &mut buf, sink.written) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io(e)),
        };
        if sink.written + n as u64 > max {
            return Err(Error::InvalidArgument(format!(
                "the offered file is larger than [server] max_binary_size ({max} bytes)"
            )));
        }
        sink.write(&buf[..n]).map_err(io)?;
    }
    if sink.written != expected {
        return Err(Error::InvalidArgument(format!(
            "the offered file changed size while it was read ({} bytes, expected {expected})",
            sink.written
        )));
    }
    sink.finish().map_err(io)
}
