//! The helpers' framed protocol on their standard output: one tag byte, a big-endian `u32`
//! length, the payload. `D` carries data (a download's bytes), `M` one JSON document of
//! metadata, `R` the result: `{"ok": …}` or `{"error": "<ErrorName>", "message": "…"}`. A
//! helper that ends without `R` has failed. Frames are bounded, so a confused or hostile
//! helper cannot make the daemon allocate without limit.

use crate::error::{Error, Result};
use bytes::BufMut;
use std::io::Write;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest payload of one frame.
pub const MAX_FRAME: usize = 1 << 20;
/// Size of the data frames a helper sends.
pub const DATA_CHUNK: usize = 256 * 1024;

const TAG_DATA: u8 = b'D';
const TAG_META: u8 = b'M';
const TAG_RESULT: u8 = b'R';

/// One frame as read by the daemon.
#[derive(Debug)]
pub enum Frame {
    /// Bytes.
    Data(Vec<u8>),
    /// Metadata.
    Meta(serde_json::Value),
    /// The helper's result; nothing follows.
    Result(Result<serde_json::Value>),
}

fn write_frame<W: Write + ?Sized>(w: &mut W, tag: u8, payload: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|l| *l as usize <= MAX_FRAME)
        .ok_or_else(|| std::io::Error::other("frame too large"))?;
    let mut head = [0u8; 5];
    head[0] = tag;
    head[1..].copy_from_slice(&len.to_be_bytes());
    w.write_all(&head)?;
    w.write_all(payload)
}

/// Sends bytes.
pub fn send_data<W: Write + ?Sized>(w: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    write_frame(w, TAG_DATA, bytes)
}

/// Gathers a stream's bytes into full data frames, each sent with one `write`: a download
/// arrives in the network's small pieces, and the pipe to the daemon costs a system call (and
/// a wake-up on each side) per write, so pieces are joined first.
pub struct DataFrames {
    /// The frame being filled: its 5-byte head, then up to `DATA_CHUNK` bytes.
    frame: Vec<u8>,
}

impl Default for DataFrames {
    fn default() -> Self {
        let mut frame = Vec::with_capacity(5 + DATA_CHUNK);
        frame.extend_from_slice(&[TAG_DATA, 0, 0, 0, 0]);
        DataFrames { frame }
    }
}

impl DataFrames {
    /// Adds `bytes`, sending each frame that fills up.
    pub fn push<W: Write + ?Sized>(&mut self, w: &mut W, mut bytes: &[u8]) -> std::io::Result<()> {
        while !bytes.is_empty() {
            let n = (5 + DATA_CHUNK - self.frame.len()).min(bytes.len());
            self.frame.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.frame.len() == 5 + DATA_CHUNK {
                self.flush(w)?;
            }
        }
        Ok(())
    }

    /// Sends what is gathered, if anything. Call it before any other frame.
    pub fn flush<W: Write + ?Sized>(&mut self, w: &mut W) -> std::io::Result<()> {
        let len = self.frame.len() - 5;
        if len == 0 {
            return Ok(());
        }
        // At most DATA_CHUNK, so it fits a u32 and the daemon's limit.
        self.frame[1..5].copy_from_slice(&(len as u32).to_be_bytes());
        let sent = w.write_all(&self.frame);
        // Even on failure: part of the frame may be out, so resending it would corrupt the
        // stream. The bytes are lost; the daemon then sees a broken stream, never a repeat.
        self.frame.truncate(5);
        sent
    }
}

/// Sends a metadata document.
pub fn send_meta<W: Write + ?Sized>(
    w: &mut W,
    meta: &impl serde::Serialize,
) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(meta).map_err(std::io::Error::other)?;
    write_frame(w, TAG_META, &bytes)
}

/// A result frame's document: `{"ok": reply}` or `{"error": name, "message": text}`.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(untagged, deny_unknown_fields)]
enum Outcome {
    Ok { ok: serde_json::Value },
    Failed { error: String, message: String },
}

/// Sends the result, then flushes.
pub fn send_result<W: Write + ?Sized>(
    w: &mut W,
    r: &Result<serde_json::Value>,
) -> std::io::Result<()> {
    let doc = match r {
        Ok(v) => Outcome::Ok { ok: v.clone() },
        Err(e) => Outcome::Failed {
            error: e.name().to_string(),
            message: e.message(),
        },
    };
    let bytes = serde_json::to_vec(&doc).map_err(std::io::Error::other)?;
    write_frame(w, TAG_RESULT, &bytes)?;
    w.flush()
}

/// Reads the next frame; `None` at the end of the stream. A data frame's bytes go into
/// `spare` when given (a buffer handed back after use), saving an allocation per frame.
pub async fn read_frame(
    r: &mut (impl AsyncRead + Unpin),
    spare: Option<Vec<u8>>,
) -> std::io::Result<Option<Frame>> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let limit = if head[0] == TAG_DATA {
        DATA_CHUNK
    } else {
        MAX_FRAME
    };
    if len > limit {
        return Err(std::io::Error::other(format!(
            "a frame of {len} bytes is larger than {limit}"
        )));
    }
    let mut payload = spare.unwrap_or_default();
    payload.clear();
    payload.reserve_exact(len);
    // Read straight into the spare capacity: no zeroing first.
    while payload.len() < len {
        let want = len - payload.len();
        if r.read_buf(&mut (&mut payload).limit(want)).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "it stopped in the middle of a frame ({} of {len} bytes)",
                    payload.len()
                ),
            ));
        }
    }
    let json = |p: &[u8]| {
        serde_json::from_slice::<serde_json::Value>(p)
            .map_err(|e| std::io::Error::other(format!("malformed frame: {e}")))
    };
    Ok(Some(match head[0] {
        TAG_DATA => Frame::Data(payload),
        TAG_META => Frame::Meta(json(&payload)?),
        TAG_RESULT => Frame::Result(
            match serde_json::from_slice::<Outcome>(&payload)
                .map_err(|_| std::io::Error::other("malformed result frame"))?
            {
                Outcome::Ok { ok } => Ok(ok),
                Outcome::Failed { error, message } => Err(helper_error(&error, &message)),
            },
        ),
        other => {
            return Err(std::io::Error::other(format!(
                "unknown frame tag {other:#04x}"
            )))
        }
    }))
}

/// Longest message kept from a helper's error.
pub const MAX_HELPER_MESSAGE: usize = 1024;

/// A helper's reported error, taken as a claim from a less trusted process: one bounded line
/// with no control characters, under a known error name. An unknown name, or `Cancelled`
/// (only the daemon cancels; a helper saying so would hide a failure), is reported as the
/// helper failing (`Internal`).
fn helper_error(name: &str, message: &str) -> Error {
    let message = crate::text::one_line(message, MAX_HELPER_MESSAGE);
    let short = name
        .strip_prefix(crate::error::ERROR_PREFIX)
        .unwrap_or(name);
    match Error::from_name(short, message.clone()) {
        Error::Cancelled(_) => {
            Error::Internal(format!("the helper claimed to be cancelled: {message}"))
        }
        Error::Internal(_) if short != "Internal" => {
            // A plain name is kept as a clue (a helper of another version); anything else is
            // not repeated.
            let plain =
                (1..=64).contains(&short.len()) && short.bytes().all(|b| b.is_ascii_alphabetic());
            Error::Internal(if plain {
                format!("the helper reported an unknown error {short}: {message}")
            } else {
                format!("the helper reported an unknown error: {message}")
            })
        }
        known => known,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn frames_round_trip_and_bounds_hold() {
        let mut buf = Vec::new();
        send_meta(&mut buf, &serde_json::json!({"status": 200})).unwrap();
        send_data(&mut buf, b"abc").unwrap();
        send_result(&mut buf, &Err(Error::DownloadFailed("cut".into()))).unwrap();
        let mut r = &buf[..];
        assert!(
            matches!(read_frame(&mut r, None).await.unwrap(), Some(Frame::Meta(m)) if m["status"] == 200)
        );
        assert!(
            matches!(read_frame(&mut r, None).await.unwrap(), Some(Frame::Data(d)) if d == b"abc")
        );
        match read_frame(&mut r, None).await.unwrap() {
            Some(Frame::Result(Err(e))) => assert_eq!(e, Error::DownloadFailed("cut".into())),
            other => panic!("{other:?}"),
        }
        assert!(read_frame(&mut r, None).await.unwrap().is_none());

        // Gathered data: full frames of DATA_CHUNK, the rest on flush, bytes in order.
        let mut buf = Vec::new();
        let mut frames = DataFrames::default();
        let bytes: Vec<u8> = (0..DATA_CHUNK * 2 + 10).map(|i| (i % 251) as u8).collect();
        for piece in bytes.chunks(7000) {
            frames.push(&mut buf, piece).unwrap();
        }
        frames.flush(&mut buf).unwrap();
        frames.flush(&mut buf).unwrap(); // nothing gathered: no empty frame
        let mut r = &buf[..];
        let mut lens = Vec::new();
        let mut joined = Vec::new();
        while let Some(f) = read_frame(&mut r, None).await.unwrap() {
            match f {
                Frame::Data(d) => {
                    lens.push(d.len());
                    joined.extend_from_slice(&d);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(lens, [DATA_CHUNK, DATA_CHUNK, 10]);
        assert_eq!(joined, bytes);

        let huge = [b'D', 0xff, 0xff, 0xff, 0xff];
        assert!(read_frame(&mut &huge[..], None).await.is_err());
        // A helper's error: known names pass, others and Cancelled do not; the message is
        // one bounded line without control characters or NUL.
        let result = |name: &str, msg: &str| {
            let mut buf = Vec::new();
            let doc = serde_json::json!({ "error": name, "message": msg }).to_string();
            write_frame(&mut buf, TAG_RESULT, doc.as_bytes()).unwrap();
            buf
        };
        let read_err = |buf: Vec<u8>| async move {
            match read_frame(&mut &buf[..], None).await.unwrap() {
                Some(Frame::Result(Err(e))) => e,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(
            read_err(result("ChecksumMismatch", "bad\nsum")).await,
            Error::ChecksumMismatch("bad sum".into())
        );
        // A result is exactly one of the two shapes; anything else is a broken helper.
        for doc in [
            r#"{"error":"DiskFull"}"#,
            r#"{"error":7,"message":"m"}"#,
            r#"{"okay":1}"#,
            r#"[]"#,
        ] {
            let mut buf = Vec::new();
            write_frame(&mut buf, TAG_RESULT, doc.as_bytes()).unwrap();
            assert!(read_frame(&mut &buf[..], None).await.is_err(), "{doc}");
        }
        let mut buf = Vec::new();
        send_result(&mut buf, &Ok(serde_json::json!({"n": 1}))).unwrap();
        assert!(matches!(
            read_frame(&mut &buf[..], None).await.unwrap(),
            Some(Frame::Result(Ok(v))) if v["n"] == 1
        ));
        let e = read_err(result("Cancelled", "x")).await;
        assert!(matches!(e, Error::Internal(_)), "{e:?}");
        let e = read_err(result("Evil\u{1b}[2J\0Name", "m")).await;
        assert_eq!(
            e,
            Error::Internal("the helper reported an unknown error: m".into())
        );
        let e = read_err(result("FutureError", "m")).await;
        assert_eq!(
            e,
            Error::Internal("the helper reported an unknown error FutureError: m".into())
        );
        let full = format!("{}InvalidArgument", crate::error::ERROR_PREFIX);
        assert_eq!(
            read_err(result(&full, "m")).await,
            Error::InvalidArgument("m".into())
        );
        let e = read_err(result(
            "DownloadFailed",
            &format!("a\0b{}", "x".repeat(5000)),
        ))
        .await;
        let m = e.message();
        assert!(
            !m.contains('\0') && m.chars().count() <= MAX_HELPER_MESSAGE + 1,
            "{m}"
        );

        // Data frames are bounded by DATA_CHUNK, other frames by MAX_FRAME.
        let big = (DATA_CHUNK as u32 + 1).to_be_bytes();
        let data_head = [b'D', big[0], big[1], big[2], big[3]];
        let e = read_frame(&mut &data_head[..], None).await.unwrap_err();
        assert!(e.to_string().contains("larger than 262144"), "{e}");
        // A frame cut short says so.
        let cut = [b'D', 0, 0, 0, 9, 1, 2, 3];
        let e = read_frame(&mut &cut[..], None).await.unwrap_err();
        assert!(e.to_string().contains("3 of 9 bytes"), "{e}");
        // A spare buffer's old content never shows through.
        let short = [b'D', 0, 0, 0, 2, 7, 8];
        let spare = vec![9u8; 100];
        match read_frame(&mut &short[..], Some(spare)).await.unwrap() {
            Some(Frame::Data(d)) => assert_eq!(d, [7, 8]),
            other => panic!("{other:?}"),
        }
        assert!(send_data(&mut Vec::new(), &vec![0; MAX_FRAME + 1]).is_err());
    }
}
