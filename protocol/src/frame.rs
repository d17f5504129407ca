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
    #[error("frame size {size} is negative")]
    Negative { size: i32 },
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
}

/// Splits a byte stream into frames of at most `frame_bytes_max` bytes.
#[derive(Debug, Clone, Copy)]
pub struct FrameCodec {
    frame_bytes_max: usize,
}

/// Most bytes reserved at once for the rest of an incomplete frame.
const FRAME_RESERVE_BYTES_MAX: usize = 1 << 20;

impl FrameCodec {
    pub fn new(frame_bytes_max: usize) -> Self {
        FrameCodec { frame_bytes_max }
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
            src.reserve(missing.min(FRAME_RESERVE_BYTES_MAX));
            return Ok(None);
        }
        src.advance(SIZE_PREFIX_BYTES);
        Ok(Some(src.split_to(size)))
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
