//! Kafka framing: every request and response is a big-endian `i32` size
//! followed by that many bytes.
//!
//! A frame larger than the limit (`socket.request.max.bytes`) is refused as
//! soon as its size is read, before any buffer is allocated for it, and the
//! buffer for an accepted frame grows only as its bytes arrive: a client that
//! announces 100 MiB and sends ten bytes costs ten bytes.

use bytes::{Buf, BytesMut};
use thiserror::Error;
use tokio_util::codec::Decoder;

/// Bytes of the size prefix.
pub const SIZE_PREFIX_BYTES: usize = 4;

#[derive(Debug, Error)]
pub enum FrameError {
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes (socket.request.max.bytes)")]
    TooLarge { size: usize, limit: usize },
    /// The size prefix is the start of a TLS record (a handshake or an
    /// alert): one side speaks TLS and the other does not.
    #[error("the peer speaks TLS (its bytes are a TLS record, not a Kafka frame): one side of this connection is configured for TLS and the other is not")]
    Tls,
    #[error("frame size {size} is negative")]
    Negative { size: i32 },
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
}

/// Whether `prefix` starts a TLS record: content type alert (21) or
/// handshake (22), then protocol version 3.x.
fn is_tls_record(prefix: &[u8]) -> bool {
    matches!(prefix, [21 | 22, 3, 0..=4, ..])
}

/// Splits a byte stream into frames of at most `frame_bytes_max` bytes.
#[derive(Debug, Clone, Copy)]
pub struct FrameCodec {
    frame_bytes_max: usize,
    /// Most bytes reserved at once for the rest of an incomplete frame.
    reserve_bytes_max: usize,
}

/// Most bytes reserved at once for the rest of an incomplete frame.
const FRAME_RESERVE_BYTES_MAX: usize = 1 << 20;

impl FrameCodec {
    pub fn new(frame_bytes_max: usize) -> Self {
        FrameCodec {
            frame_bytes_max,
            reserve_bytes_max: FRAME_RESERVE_BYTES_MAX,
        }
    }

    /// Frames larger than `frame_bytes_max` are refused from now on (a
    /// connection allowed larger requests once its client authenticated).
    pub fn set_frame_bytes_max(&mut self, frame_bytes_max: usize) {
        self.frame_bytes_max = frame_bytes_max;
    }

    /// For a peer trusted with memory (a broker this side chose to ask):
    /// room for a whole announced frame is reserved at once, so a large
    /// response arrives into one allocation.
    pub fn reserving_whole_frames(self) -> Self {
        FrameCodec {
            reserve_bytes_max: self.frame_bytes_max,
            ..self
        }
    }
}

impl Decoder for FrameCodec {
    type Item = BytesMut;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        if src.len() < SIZE_PREFIX_BYTES {
            return Ok(None);
        }
        let size = i32::from_be_bytes(src[..SIZE_PREFIX_BYTES].try_into().expect("four bytes"));
        if size < 0 {
            return Err(FrameError::Negative { size });
        }
        let size = size as usize;
        if size > self.frame_bytes_max && is_tls_record(&src[..SIZE_PREFIX_BYTES]) {
            return Err(FrameError::Tls);
        }
        if size > self.frame_bytes_max {
            return Err(FrameError::TooLarge {
                size,
                limit: self.frame_bytes_max,
            });
        }
        if src.len() < SIZE_PREFIX_BYTES + size {
            // Not all here yet: a normal state, not an error. Make room for
            // the rest (up to a bound, so an announced size alone cannot
            // claim much), so it arrives in few reads and no regrowing copies.
            let missing = SIZE_PREFIX_BYTES + size - src.len();
            src.reserve(missing.min(self.reserve_bytes_max));
            return Ok(None);
        }
        src.advance(SIZE_PREFIX_BYTES);
        Ok(Some(src.split_to(size)))
    }
}

impl From<FrameError> for std::io::Error {
    fn from(error: FrameError) -> Self {
        match error {
            FrameError::Io(error) => error,
            error => std::io::Error::new(std::io::ErrorKind::InvalidData, error),
        }
    }
}

/// Appends one frame to `out`: the size prefix, then what `body` writes.
pub fn write_frame<E>(
    out: &mut BytesMut,
    body: impl FnOnce(&mut BytesMut) -> Result<(), E>,
) -> Result<(), E> {
    let start = out.len();
    out.extend_from_slice(&[0; SIZE_PREFIX_BYTES]);
    body(out)?;
    let size = (out.len() - start - SIZE_PREFIX_BYTES) as i32;
    out[start..start + SIZE_PREFIX_BYTES].copy_from_slice(&size.to_be_bytes());
    Ok(())
}

/// Reads a stream one frame at a time through [`FrameCodec`], keeping one
/// buffer across frames: bytes read past a frame stay for the next, and the
/// memory of a frame the caller has dropped is reused.
#[derive(Debug)]
pub struct FrameReader {
    codec: FrameCodec,
    buffer: BytesMut,
}

/// Bytes asked of the stream per read while no frame size says more.
const READ_CHUNK_BYTES: usize = 64 << 10;
/// Spare room below which the buffer gets another chunk before a read.
const READ_SPARE_MIN_BYTES: usize = 4 << 10;

impl FrameReader {
    pub fn new(codec: FrameCodec) -> Self {
        FrameReader {
            codec,
            buffer: BytesMut::new(),
        }
    }

    /// The next frame's body; `None` if the peer closed between frames.
    pub async fn read<R: tokio::io::AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
    ) -> std::io::Result<Option<BytesMut>> {
        use tokio::io::AsyncReadExt;
        loop {
            if let Some(frame) = self.codec.decode(&mut self.buffer)? {
                return Ok(Some(frame));
            }
            // Room for a sizeable read: a nearly full buffer gets a new
            // chunk (or its memory back, once earlier frames are dropped),
            // so reads are neither tiny nor an allocation per frame.
            if self.buffer.capacity() - self.buffer.len() < READ_SPARE_MIN_BYTES {
                self.buffer.reserve(READ_CHUNK_BYTES);
            }
            if reader.read_buf(&mut self.buffer).await? == 0 {
                return self.closed();
            }
        }
    }

    /// As [`Self::read`], from a blocking reader.
    pub fn read_blocking<R: std::io::Read>(
        &mut self,
        reader: &mut R,
    ) -> std::io::Result<Option<BytesMut>> {
        let mut chunk = vec![0; READ_CHUNK_BYTES];
        loop {
            if let Some(frame) = self.codec.decode(&mut self.buffer)? {
                return Ok(Some(frame));
            }
            match reader.read(&mut chunk)? {
                0 => return self.closed(),
                read => self.buffer.extend_from_slice(&chunk[..read]),
            }
        }
    }

    fn closed(&self) -> std::io::Result<Option<BytesMut>> {
        if self.buffer.is_empty() {
            Ok(None)
        } else {
            Err(std::io::ErrorKind::UnexpectedEof.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;
    use proptest::prelude::*;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut bytes = (body.len() as i32).to_be_bytes().to_vec();
        bytes.extend_from_slice(body);
        bytes
    }

    #[test]
    fn a_frame_arriving_in_pieces_is_incomplete_until_whole() {
        let mut codec = FrameCodec::new(1024);
        let bytes = frame(b"hello kafka");
        let mut src = BytesMut::new();
        for &byte in &bytes[..bytes.len() - 1] {
            src.put_u8(byte);
            assert!(codec.decode(&mut src).unwrap().is_none());
        }
        src.put_u8(*bytes.last().unwrap());
        assert_eq!(
            &codec.decode(&mut src).unwrap().unwrap()[..],
            b"hello kafka"
        );
        assert!(src.is_empty());
    }

    #[test]
    fn a_tls_record_is_named_as_such() {
        let mut codec = FrameCodec::new(1 << 20);
        // A TLS 1.2/1.3 ClientHello and a TLS alert.
        for start in [[22u8, 3, 1, 2, 0], [21, 3, 3, 0, 2]] {
            let mut src = BytesMut::from(&start[..]);
            assert!(matches!(codec.decode(&mut src), Err(FrameError::Tls)));
        }
        // A frame that small is a frame, whatever its first byte.
        let mut codec = FrameCodec::new(u32::MAX as usize);
        let mut src = BytesMut::from(&[22u8, 3, 1, 2, 0][..]);
        assert!(codec.decode(&mut src).unwrap().is_none());
    }

    #[test]
    fn an_oversized_frame_is_refused_from_its_size_alone() {
        let mut codec = FrameCodec::new(1 << 20);
        let mut src = BytesMut::from(&i32::MAX.to_be_bytes()[..]);
        let capacity_before = src.capacity();
        assert!(
            matches!(codec.decode(&mut src), Err(FrameError::TooLarge { size, .. }) if size == i32::MAX as usize)
        );
        assert_eq!(
            src.capacity(),
            capacity_before,
            "nothing was allocated for it"
        );
        let mut src = BytesMut::from(&(-5i32).to_be_bytes()[..]);
        assert!(matches!(
            codec.decode(&mut src),
            Err(FrameError::Negative { size: -5 })
        ));
    }

    #[tokio::test]
    async fn a_reader_returns_frames_whole_and_knows_a_clean_close_from_a_cut() {
        let mut out = BytesMut::new();
        for body in [&b"first"[..], b"", b"third"] {
            write_frame(&mut out, |out| {
                out.extend_from_slice(body);
                Ok::<(), ()>(())
            })
            .unwrap();
        }
        let mut reader = FrameReader::new(FrameCodec::new(1024));
        let mut stream = &out[..];
        let mut frames = Vec::new();
        while let Some(frame) = reader.read(&mut stream).await.unwrap() {
            frames.push(frame.to_vec());
        }
        assert_eq!(frames, [b"first".to_vec(), Vec::new(), b"third".to_vec()]);
        let mut blocking = FrameReader::new(FrameCodec::new(1024));
        let mut cut = &out[..out.len() - 1];
        assert_eq!(
            &blocking.read_blocking(&mut cut).unwrap().unwrap()[..],
            b"first"
        );
        assert!(blocking
            .read_blocking(&mut cut)
            .unwrap()
            .unwrap()
            .is_empty());
        let error = blocking.read_blocking(&mut cut).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof);
        let mut small = FrameReader::new(FrameCodec::new(2));
        let error = small.read(&mut &out[..]).await.unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidData, "{error}");
    }

    proptest! {
        #[test]
        fn pipelined_frames_split_back_exactly(bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20), chunk in 1usize..64) {
            let stream: Vec<u8> = bodies.iter().flat_map(|body| frame(body)).collect();
            let mut codec = FrameCodec::new(1024);
            let mut src = BytesMut::new();
            let mut decoded = Vec::new();
            for piece in stream.chunks(chunk) {
                src.extend_from_slice(piece);
                while let Some(frame) = codec.decode(&mut src).unwrap() {
                    decoded.push(frame.to_vec());
                }
            }
            prop_assert_eq!(decoded, bodies);
        }
    }
}
