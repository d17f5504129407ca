//! Response encoding: size prefix, header (v0 or v1 by API and version;
//! ApiVersions always v0, so a client that does not know the broker yet can
//! read it), body.
//!
//! A response is a [`Frame`] of chunks. The record sets a Fetch response
//! carries are not copied into it: their chunks are the very `Bytes` the
//! log handed out (views of its segment maps), so the records go from the
//! page cache to the socket with the kernel's copy alone.

use std::ops::Range;

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, FetchResponse, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::buf::ByteBufMut;
use kafka_protocol::protocol::Encodable;
use thiserror::Error;

use crate::frame::SIZE_PREFIX_BYTES;

#[derive(Debug, Error)]
#[error("cannot encode {api_key:?} v{api_version} response: {reason}")]
pub struct EncodeError {
    pub api_key: ApiKey,
    pub api_version: i16,
    pub reason: String,
}

/// Record sets at least this large are shared with the frame, not copied.
const SHARED_RECORDS_MIN_BYTES: usize = 16 << 10;

/// An encoded response, size prefix included, in chunks to be written one
/// after another.
#[derive(Debug, Clone)]
pub struct Frame {
    chunks: Vec<Bytes>,
}

impl Frame {
    pub fn chunks(&self) -> &[Bytes] {
        &self.chunks
    }
}

/// Encodes a whole response frame, size prefix included.
pub fn encode(
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> Result<Frame, EncodeError> {
    // kafka-protocol reports encoding errors as `anyhow::Error`.
    let failed = |error: anyhow::Error| EncodeError {
        api_key,
        api_version,
        reason: format!("{error:#}"),
    };
    let header_version = match api_key {
        ApiKey::ApiVersions => 0,
        _ => api_key.response_header_version(api_version),
    };
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    if let ResponseKind::Fetch(fetch) = body {
        return encode_fetch(&header, header_version, fetch, api_version).map_err(failed);
    }
    let mut bytes = BytesMut::with_capacity(256);
    bytes.put_i32(0); // size, patched below
    header.encode(&mut bytes, header_version).map_err(failed)?;
    body.encode(&mut bytes, api_version).map_err(failed)?;
    let size = (bytes.len() - SIZE_PREFIX_BYTES) as i32;
    bytes[..SIZE_PREFIX_BYTES].copy_from_slice(&size.to_be_bytes());
    Ok(Frame {
        chunks: vec![bytes.freeze()],
    })
}

/// A Fetch response, its large record sets shared rather than copied.
fn encode_fetch(
    header: &ResponseHeader,
    header_version: i16,
    fetch: &FetchResponse,
    api_version: i16,
) -> anyhow::Result<Frame> {
    let size = header.compute_size(header_version)? + fetch.compute_size(api_version)?;
    let shared: Vec<&Bytes> = fetch
        .responses
        .iter()
        .flat_map(|topic| &topic.partitions)
        .filter_map(|partition| partition.records.as_ref())
        .filter(|records| records.len() >= SHARED_RECORDS_MIN_BYTES)
        .collect();
    let owned_bytes = size + SIZE_PREFIX_BYTES - shared.iter().map(|r| r.len()).sum::<usize>();
    let mut buf = SharingBuf {
        owned: BytesMut::with_capacity(owned_bytes),
        chunks: Vec::with_capacity(2 * shared.len() + 1),
        shared: &shared,
        next_shared: 0,
    };
    buf.put_i32(i32::try_from(size)?);
    header.encode(&mut buf, header_version)?;
    fetch.encode(&mut buf, api_version)?;
    let mut chunks = buf.chunks;
    if !buf.owned.is_empty() {
        chunks.push(buf.owned.freeze());
    }
    Ok(Frame { chunks })
}

/// A buffer that takes the record sets in `shared` (in the order they are
/// encoded) as chunks of their own and copies everything else.
struct SharingBuf<'a> {
    owned: BytesMut,
    chunks: Vec<Bytes>,
    shared: &'a [&'a Bytes],
    next_shared: usize,
}

impl SharingBuf<'_> {
    /// Bytes in `chunks`: offsets count from the frame's start.
    fn before_owned(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum()
    }
}

// SAFETY: every method but `put_slice` forwards to the owned buffer, whose
// own implementation upholds the trait's contract; `put_slice` writes the
// whole slice (as a chunk or into the owned buffer).
unsafe impl BufMut for SharingBuf<'_> {
    fn remaining_mut(&self) -> usize {
        self.owned.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller's promise about `chunk_mut`, forwarded.
        unsafe { self.owned.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.owned.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        let shared = self.shared.get(self.next_shared).copied();
        match shared {
            Some(records) if records.as_ptr() == src.as_ptr() && records.len() == src.len() => {
                self.next_shared += 1;
                if !self.owned.is_empty() {
                    self.chunks.push(self.owned.split().freeze());
                }
                self.chunks.push(Bytes::clone(records));
            }
            _ => self.owned.extend_from_slice(src),
        }
    }
}

/// Gaps (which message bodies do not use) work within the bytes written
/// since the last shared record set.
impl ByteBufMut for SharingBuf<'_> {
    fn offset(&self) -> usize {
        self.before_owned() + self.owned.len()
    }

    fn seek(&mut self, offset: usize) {
        let owned_offset = offset
            .checked_sub(self.before_owned())
            .expect("seek into a shared record set");
        self.owned.resize(owned_offset, 0);
    }

    fn range(&mut self, range: Range<usize>) -> &mut [u8] {
        let before_owned = self.before_owned();
        let start = range
            .start
            .checked_sub(before_owned)
            .expect("range in a shared record set");
        &mut self.owned[start..range.end - before_owned]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::versions;

    /// The frame in one piece.
    fn whole(frame: &Frame) -> Bytes {
        frame.chunks().concat().into()
    }

    #[test]
    fn fetch_responses_share_large_record_sets_and_encode_as_kafka_does() {
        use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
        use kafka_protocol::messages::TopicName;
        use kafka_protocol::protocol::StrBytes;

        let large = Bytes::from(vec![7u8; SHARED_RECORDS_MIN_BYTES * 2]);
        let small = Bytes::from_static(b"small records");
        let partitions = [Some(large.clone()), Some(small), None, Some(large.clone())]
            .into_iter()
            .enumerate()
            .map(|(index, records)| {
                PartitionData::default()
                    .with_partition_index(index as i32)
                    .with_high_watermark(100)
                    .with_records(records)
            })
            .collect();
        let fetch = FetchResponse::default()
            .with_responses(vec![FetchableTopicResponse::default()
                .with_topic(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(partitions)]);
        for api_version in [4, 11, 12, 16] {
            let body = ResponseKind::Fetch(fetch.clone());
            let frame = encode(ApiKey::Fetch, api_version, 9, &body).unwrap();
            let shared = frame
                .chunks()
                .iter()
                .filter(|chunk| chunk.as_ptr() == large.as_ptr())
                .count();
            assert_eq!(
                shared, 2,
                "v{api_version}: both large record sets are shared"
            );

            let mut expected = BytesMut::new();
            expected.put_i32(0);
            ResponseHeader::default()
                .with_correlation_id(9)
                .encode(
                    &mut expected,
                    ApiKey::Fetch.response_header_version(api_version),
                )
                .unwrap();
            body.encode(&mut expected, api_version).unwrap();
            let size = (expected.len() - SIZE_PREFIX_BYTES) as i32;
            expected[..SIZE_PREFIX_BYTES].copy_from_slice(&size.to_be_bytes());
            assert_eq!(whole(&frame), expected.freeze(), "v{api_version}");
        }
    }

    #[test]
    fn api_versions_always_uses_header_v0_and_the_size_is_right() {
        let body = ResponseKind::ApiVersions(versions::api_versions_response(0));
        for api_version in 0..=3 {
            let frame = whole(&encode(ApiKey::ApiVersions, api_version, 5, &body).unwrap());
            let size = i32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
            assert_eq!(size, frame.len() - 4);
            assert_eq!(i32::from_be_bytes(frame[4..8].try_into().unwrap()), 5);
            if api_version >= 3 {
                // Flexible body, but still no tagged fields after the correlation id:
                // the next byte is the error code's high byte, not a tag count.
                assert_eq!(&frame[8..10], &[0, 0]);
            }
        }
    }
}
