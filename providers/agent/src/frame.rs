//! The wire envelope: the handshake magic and length-prefixed frames.
//!
//! This layer knows nothing about operations; it only turns bytes into [`Frame`]s and back and enforces
//! the size limit before allocating anything, so a corrupt or hostile length can never make either side
//! allocate the claimed size.

use std::io::{self, Read, Write};

/// Bytes the client writes before its hello. The agent scans for them (discarding anything before),
/// which resynchronises a virtio-serial port that still holds bytes from an earlier session.
pub const MAGIC: [u8; 8] = *b"NESTFORM";

/// Largest frame body either side accepts (1 MiB).
pub const MAX_BODY: u32 = 1 << 20;

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
    if body_len > MAX_BODY {
        return Err(FrameError::TooLarge { size: u64::from(body_len), limit: MAX_BODY });
    }
    let mut header = [0u8; HEADER_LEN as usize];
    reader.read_exact(&mut header)?;
    let stream = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    let kind = FrameKind::from_u8(header[4])
        .ok_or_else(|| FrameError::Malformed(format!("unknown frame kind `{}`", header[4])))?;
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
}
