//! The wire envelope: the handshake magic and length-prefixed frames.
//!
//! This layer knows nothing about operations; it only turns bytes into [`Frame`]s and back and enforces
//! the size limit before allocating anything, so a corrupt or hostile length can never make either side
//! allocate the claimed size.

use std::io::{self, Read, Write};

/// Bytes the client writes before its hello. The agent scans for them (discarding anything before),
/// which resynchronises a virtio-serial port that still holds bytes from an earlier session.
pub const MAGIC: [u8; 8] = *b"NESTFORM";

/// How every welcome frame continues after its length: stream 0, kind `Welcome`, and the JSON of a
/// [`crate::proto::Welcome`], whose first field is `protocol` in every version. The client scans for
/// it ([`scan_for_welcome`]), so this is the agent's marker without the agent sending one: a marker of
/// its own would leave a new client deaf to an old agent, where this one lets it say which version
/// the agent speaks.
pub const WELCOME_MARK: &[u8] = b"\0\0\0\0\x02{\"protocol\":";

/// Largest welcome body [`scan_for_welcome`] considers; a welcome is a few hundred bytes.
const MAX_WELCOME_BODY: u32 = 64 * 1024;

/// Largest frame body either side accepts (1 MiB).
pub const MAX_BODY: u32 = 1 << 20;

/// Largest body of an oversized frame that is skipped rather than taken as lost framing (16 MiB); see
/// [`read_frame`].
pub const MAX_SKIPPED_BODY: u32 = 16 << 20;

/// Bytes of the frame header after the length: stream id (u32 big-endian) and kind (u8).
pub const HEADER_LEN: u32 = 5;

/// Largest data chunk a sender puts in one frame; well under [`MAX_BODY`] so streams interleave finely.
pub const DATA_CHUNK: usize = 64 * 1024;

/// What a frame carries. The numeric values are part of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// Client hello (stream 0, JSON [`crate::proto::Hello`]).
    Hello = 1,
    /// Agent reply to the hello (stream 0, JSON [`crate::proto::Welcome`]).
    Welcome = 2,
    /// Client opens a stream (JSON [`crate::proto::Request`]).
    Open = 3,
    /// Primary bytes of a stream: stdin, stdout, file content or relayed bytes. Counts against credit.
    Data = 4,
    /// Secondary bytes of a stream: stderr of `exec`. Counts against credit.
    ErrData = 5,
    /// The sender will send no more `Data` on this stream (half close).
    Eof = 6,
    /// The receiver consumed bytes: body is a u32 big-endian count the sender may send again.
    Credit = 7,
    /// A JSON control message inside a stream ([`crate::proto::AgentMessage`] or [`crate::proto::ClientMessage`]).
    Control = 8,
    /// The stream (or, on stream 0, the whole connection) failed; body is a UTF-8 message.
    Error = 9,
    /// The sender is done with the stream and sends nothing more on it (also used to cancel).
    Close = 10,
}

impl FrameKind {
    fn from_u8(value: u8) -> Option<Self> {
        use FrameKind::*;
        Some(match value {
            1 => Hello,
            2 => Welcome,
            3 => Open,
            4 => Data,
            5 => ErrData,
            6 => Eof,
            7 => Credit,
            8 => Control,
            9 => Error,
            10 => Close,
            _ => return None,
        })
    }
}

/// One frame: a stream id, a kind and a body of at most [`MAX_BODY`] bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Stream the frame belongs to; 0 is the connection itself.
    pub stream: u32,
    /// What the body means.
    pub kind: FrameKind,
    /// Payload.
    pub body: Vec<u8>,
}

impl Frame {
    /// Builds a frame.
    pub fn new(stream: u32, kind: FrameKind, body: Vec<u8>) -> Self {
        Self { stream, kind, body }
    }
}

/// Why reading a frame failed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The transport ended cleanly between frames.
    #[error("the channel was closed")]
    Closed,
    /// The transport failed, or ended inside a frame.
    #[error("channel i/o failed: {0}")]
    Io(#[from] io::Error),
    /// The length prefix claims more than the limit.
    #[error("frame of `{size}` bytes exceeds the limit of `{limit}` bytes")]
    TooLarge {
        /// Claimed body size.
        size: u64,
        /// The limit.
        limit: u32,
    },
    /// A frame over the limit with a header that can be trusted: its body was read and dropped, and
    /// the reader is at the next frame. Only the stream it belongs to fails.
    #[error("frame of `{size}` bytes exceeds the limit of `{limit}` bytes")]
    Oversized {
        /// Stream the frame belongs to.
        stream: u32,
        /// Its kind.
        kind: FrameKind,
        /// Its body's size.
        size: u64,
        /// The limit.
        limit: u32,
    },
    /// The first bytes of [`MAGIC`] arrived where a frame length was expected: the peer started a new
    /// handshake (the reader is left just after those four bytes).
    #[error("the magic of a new handshake arrived where a frame was expected")]
    Magic,
    /// The frame is shorter than its header or names an unknown kind.
    #[error("malformed frame: {0}")]
    Malformed(String),
}

/// Writes one frame with a single `write_all`, so frames from several threads never interleave as long
/// as the caller holds the writer's lock.
pub fn write_frame(writer: &mut dyn Write, frame: &Frame) -> io::Result<()> {
    let body_len = u32::try_from(frame.body.len())
        .ok()
        .filter(|len| *len <= MAX_BODY)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "frame body over the limit"))?;
    let mut buf = Vec::with_capacity(4 + HEADER_LEN as usize + frame.body.len());
    buf.extend_from_slice(&(body_len + HEADER_LEN).to_be_bytes());
    buf.extend_from_slice(&frame.stream.to_be_bytes());
    buf.push(frame.kind as u8);
    buf.extend_from_slice(&frame.body);
    writer.write_all(&buf)?;
    writer.flush()
}

/// Reads one frame. A length over the limit is rejected before anything is allocated.
///
/// A length over the limit but at most [`MAX_SKIPPED_BODY`], followed by a known kind on a stream
/// other than 0, is skipped ([`FrameError::Oversized`]) instead of ending the connection: the channel
/// is a reliable byte stream that was in step up to here (every earlier frame parsed), so such a
/// length is what the peer wrote (a request too large for this side, say a huge environment from a
/// newer client), and failing that one stream keeps every other stream and tunnel alive. A length
/// beyond that bound, or a header that does not parse, is more likely garbage than a request; then
/// framing is taken as lost. The bound also caps what being wrong costs: 16 MiB read and dropped.
pub fn read_frame(reader: &mut dyn Read) -> Result<Frame, FrameError> {
    let mut len = [0u8; 4];
    read_exact_or_closed(reader, &mut len)?;
    if len == MAGIC[..4] {
        return Err(FrameError::Magic);
    }
    let len = u32::from_be_bytes(len);
    if len < HEADER_LEN {
        return Err(FrameError::Malformed(format!("length `{len}` is shorter than the header")));
    }
    let body_len = len - HEADER_LEN;
    let too_large = FrameError::TooLarge { size: u64::from(body_len), limit: MAX_BODY };
    if body_len > MAX_SKIPPED_BODY {
        return Err(too_large);
    }
    let mut header = [0u8; HEADER_LEN as usize];
    reader.read_exact(&mut header)?;
    let stream = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    let kind = FrameKind::from_u8(header[4]);
    if body_len > MAX_BODY {
        let Some(kind) = kind.filter(|_| stream != 0) else {
            return Err(too_large);
        };
        let skipped = io::copy(&mut reader.take(u64::from(body_len)), &mut io::sink())?;
        if skipped < u64::from(body_len) {
            return Err(FrameError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        return Err(FrameError::Oversized { stream, kind, size: u64::from(body_len), limit: MAX_BODY });
    }
    let kind = kind.ok_or_else(|| FrameError::Malformed(format!("unknown frame kind `{}`", header[4])))?;
    let mut body = vec![0u8; body_len as usize];
    reader.read_exact(&mut body)?;
    Ok(Frame { stream, kind, body })
}

/// Reads the first bytes of a frame, telling a clean end between frames from an end inside one.
fn read_exact_or_closed(reader: &mut dyn Read, buf: &mut [u8]) -> Result<(), FrameError> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) if filled == 0 => return Err(FrameError::Closed),
            Ok(0) => return Err(FrameError::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    Ok(())
}

/// Reads the rest of [`MAGIC`] after [`FrameError::Magic`]; false if the bytes are something else.
pub fn rest_of_magic(reader: &mut dyn Read) -> Result<bool, FrameError> {
    let mut rest = [0u8; 4];
    read_exact_or_closed(reader, &mut rest)?;
    Ok(rest == MAGIC[4..])
}

/// Reads until [`MAGIC`] has gone by, discarding whatever came before it. Returns how many bytes were
/// discarded, or [`FrameError::Closed`] if the transport ends first.
pub fn skip_to_magic(reader: &mut dyn Read) -> Result<u64, FrameError> {
    let mut matched = 0usize;
    let mut discarded = 0u64;
    let mut byte = [0u8; 1];
    // Byte at a time is fine: this runs once per connection, over a handful of bytes.
    while matched < MAGIC.len() {
        match reader.read(&mut byte) {
            Ok(0) => return Err(FrameError::Closed),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(FrameError::Io(e)),
        }
        if byte[0] == MAGIC[matched] {
            matched += 1;
        } else {
            discarded += matched as u64 + 1;
            // MAGIC has no repeated prefix, so a mismatch restarts at 0 or 1.
            matched = usize::from(byte[0] == MAGIC[0]);
            discarded -= matched as u64;
        }
    }
    Ok(discarded)
}

/// Reads until a welcome frame whose body `accept` takes (`Some`), discarding everything before it:
/// whatever a virtio-serial port still held, such as the rest of a frame the agent was writing when
/// the previous host left, which no frame boundary can be found in. Returns what `accept` made of the
/// body and the bytes read past the frame (the caller reads them before the rest of the channel).
///
/// A candidate is [`WELCOME_MARK`] after a length that fits a welcome. Every candidate is tried, also
/// those inside an earlier candidate's claimed body, so a stale byte sequence that happens to look
/// like a welcome cannot swallow the real one behind it.
pub fn scan_for_welcome<T>(
    reader: &mut dyn Read,
    mut accept: impl FnMut(&[u8]) -> Option<T>,
) -> Result<(T, Vec<u8>), FrameError> {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut read_more = |buf: &mut Vec<u8>| -> Result<(), FrameError> {
        loop {
            match reader.read(&mut chunk) {
                Ok(0) => return Err(FrameError::Closed),
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(FrameError::Io(e)),
            }
        }
    };
    loop {
        // Everything before the last bytes (which may begin a mark) or before the first candidate
        // still waiting for its body has been ruled out.
        let mut keep_from = buf.len().saturating_sub(WELCOME_MARK.len() + 3);
        let mut from = 4;
        while let Some(at) = find_mark(&buf, from) {
            from = at + 1;
            let len = u32::from_be_bytes([buf[at - 4], buf[at - 3], buf[at - 2], buf[at - 1]]);
            if !(HEADER_LEN + 1..=HEADER_LEN + MAX_WELCOME_BODY).contains(&len) {
                continue;
            }
            let end = at + len as usize;
            if buf.len() < end {
                // Later candidates are still tried: this one may be stale bytes that only look like
                // a welcome, whose length would have us wait for bytes that never come.
                keep_from = keep_from.min(at - 4);
                continue;
            }
            if let Some(accepted) = accept(&buf[at + HEADER_LEN as usize..end]) {
                return Ok((accepted, buf.split_off(end)));
            }
        }
        buf.drain(..keep_from);
        read_more(&mut buf)?;
    }
}

/// Where the next [`WELCOME_MARK`] with room for a length before it starts, at or after `from`.
fn find_mark(buf: &[u8], from: usize) -> Option<usize> {
    let from = from.max(4);
    buf.get(from..)?.windows(WELCOME_MARK.len()).position(|w| w == WELCOME_MARK).map(|at| at + from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trip() {
        let frame = Frame::new(7, FrameKind::Data, b"hello".to_vec());
        let mut buf = Vec::new();
        write_frame(&mut buf, &frame).unwrap();
        assert_eq!(&buf[..4], &(5u32 + HEADER_LEN).to_be_bytes());
        let back = read_frame(&mut buf.as_slice()).unwrap();
        assert_eq!(back, frame);
    }

    #[test]
    fn oversized_length_is_rejected_without_reading_the_body() {
        let mut buf = Vec::new();
        buf.extend_from_slice(&u32::MAX.to_be_bytes());
        buf.extend_from_slice(&[0, 0, 0, 1, 4]);
        match read_frame(&mut buf.as_slice()) {
            Err(FrameError::TooLarge { size, limit }) => {
                assert_eq!(size, u64::from(u32::MAX - HEADER_LEN));
                assert_eq!(limit, MAX_BODY);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[test]
    fn a_trusted_oversized_frame_is_skipped() {
        let size = MAX_BODY + 10;
        let mut buf = (size + HEADER_LEN).to_be_bytes().to_vec();
        buf.extend_from_slice(&[0, 0, 0, 3, FrameKind::Open as u8]);
        buf.resize(buf.len() + size as usize, b'x');
        write_frame(&mut buf, &Frame::new(5, FrameKind::Close, Vec::new())).unwrap();
        let mut reader = buf.as_slice();
        match read_frame(&mut reader) {
            Err(FrameError::Oversized { stream: 3, kind: FrameKind::Open, size: got, .. }) => {
                assert_eq!(got, u64::from(size))
            }
            other => panic!("expected Oversized, got {other:?}"),
        }
        assert_eq!(read_frame(&mut reader).unwrap(), Frame::new(5, FrameKind::Close, Vec::new()));
        // On stream 0, or with an unknown kind, framing is lost.
        let mut zero = (size + HEADER_LEN).to_be_bytes().to_vec();
        zero.extend_from_slice(&[0, 0, 0, 0, FrameKind::Error as u8]);
        assert!(matches!(read_frame(&mut zero.as_slice()), Err(FrameError::TooLarge { .. })));
        let mut unknown = (size + HEADER_LEN).to_be_bytes().to_vec();
        unknown.extend_from_slice(&[0, 0, 0, 1, 99]);
        assert!(matches!(read_frame(&mut unknown.as_slice()), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn clean_end_and_truncated_frame_differ() {
        assert!(matches!(read_frame(&mut [].as_slice()), Err(FrameError::Closed)));
        assert!(matches!(read_frame(&mut [0u8, 0].as_slice()), Err(FrameError::Io(_))));
        let mut buf = Vec::new();
        write_frame(&mut buf, &Frame::new(1, FrameKind::Data, vec![1; 10])).unwrap();
        buf.truncate(buf.len() - 1);
        assert!(matches!(read_frame(&mut buf.as_slice()), Err(FrameError::Io(_))));
    }

    #[test]
    fn unknown_kind_and_short_length_are_malformed() {
        let bad_kind = [0u8, 0, 0, 5, 0, 0, 0, 1, 99];
        assert!(matches!(read_frame(&mut bad_kind.as_slice()), Err(FrameError::Malformed(_))));
        let short = [0u8, 0, 0, 2, 0, 0];
        assert!(matches!(read_frame(&mut short.as_slice()), Err(FrameError::Malformed(_))));
    }

    #[test]
    fn writer_refuses_oversized_body() {
        let frame = Frame::new(1, FrameKind::Data, vec![0; MAX_BODY as usize + 1]);
        assert!(write_frame(&mut Vec::new(), &frame).is_err());
    }

    #[test]
    fn magic_in_place_of_a_length_is_recognised() {
        let mut reader = &b"NESTFORMx"[..];
        assert!(matches!(read_frame(&mut reader), Err(FrameError::Magic)));
        assert!(rest_of_magic(&mut reader).unwrap());
        assert_eq!(reader, b"x");
        assert!(!rest_of_magic(&mut &b"FOUR"[..]).unwrap());
    }

    #[test]
    fn magic_is_found_after_garbage() {
        let mut input = b"junkNESNESTFORM".to_vec();
        input.extend_from_slice(b"rest");
        let mut reader = input.as_slice();
        assert_eq!(skip_to_magic(&mut reader).unwrap(), 7);
        assert_eq!(reader, b"rest");
        assert!(matches!(skip_to_magic(&mut b"NESTFO".as_slice()), Err(FrameError::Closed)));
    }

    fn welcome_frame(nonce: u64) -> Vec<u8> {
        let welcome = crate::proto::Welcome {
            protocol: crate::proto::PROTOCOL_VERSION,
            nonce,
            agent_version: "0".into(),
            capabilities: vec!["exec".into()],
        };
        let mut buf = Vec::new();
        write_frame(&mut buf, &Frame::new(0, FrameKind::Welcome, serde_json::to_vec(&welcome).unwrap()))
            .unwrap();
        buf
    }

    fn nonce_of(body: &[u8]) -> Option<u64> {
        serde_json::from_slice::<crate::proto::Welcome>(body).ok().map(|w| w.nonce)
    }

    #[test]
    fn every_welcome_begins_with_the_mark() {
        assert!(welcome_frame(1)[4..].starts_with(WELCOME_MARK));
    }

    #[test]
    fn welcome_is_found_behind_stale_bytes_a_lookalike_and_another_nonce() {
        let mut input = vec![9u8; 100];
        // A frame header claiming more than follows, as the tail of an interrupted write leaves.
        input.extend_from_slice(&(60_000u32).to_be_bytes());
        input.extend_from_slice(&[0, 0, 0, 3, FrameKind::Data as u8, 1, 2, 3]);
        // A lookalike whose length would swallow the real welcome behind it.
        input.extend_from_slice(&(200u32).to_be_bytes());
        input.extend_from_slice(WELCOME_MARK);
        input.extend_from_slice(&welcome_frame(1));
        input.extend_from_slice(&welcome_frame(2));
        input.extend_from_slice(b"after");
        // One byte per read: marks and lengths straddle reads.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let Some((first, rest)) = self.0.split_first() else { return Ok(0) };
                buf[0] = *first;
                self.0 = rest;
                Ok(1)
            }
        }
        let mut reader = Trickle(&input);
        let (nonce, left) = scan_for_welcome(&mut reader, |body| nonce_of(body).filter(|n| *n == 2)).unwrap();
        assert_eq!(nonce, 2);
        assert_eq!([left.as_slice(), reader.0].concat(), b"after");
        // The same from a reader that hands over everything at once.
        let (nonce, left) =
            scan_for_welcome(&mut input.as_slice(), |body| nonce_of(body).filter(|n| *n == 2)).unwrap();
        assert_eq!((nonce, left.as_slice()), (2, &b"after"[..]));
        let closed =
            scan_for_welcome(&mut &input[..input.len() - 30], |body| nonce_of(body).filter(|n| *n == 2));
        assert!(matches!(closed, Err(FrameError::Closed)));
    }
}
