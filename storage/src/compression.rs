//! The record compression codecs of the batch format (attribute bits 0-2).
//!
//! A compressed batch keeps its 61-byte header as is; only the records after
//! it are compressed, as one stream. What each codec's stream looks like is
//! what Kafka's clients write and read:
//!
//! - gzip: a gzip member (RFC 1952).
//! - snappy: the "xerial" framing of the Java client (an 8-byte magic, two
//!   version words, then length-prefixed raw snappy blocks); a plain raw
//!   snappy block, as some clients write, is read too.
//! - lz4: an LZ4 frame with independent 64 KiB blocks (KIP-57).
//! - zstd: a zstd frame.

use std::borrow::Cow;
use std::io::{Read, Write};

use crate::batch::{BatchError, BatchHeader, Compression, BATCH_HEADER_BYTES};

/// The xerial snappy stream header: magic, version 1, compatible version 1.
const XERIAL_HEADER: [u8; 16] = [
    0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0, 0, 0, 0, 1, 0, 0, 0, 1,
];
/// Uncompressed bytes per xerial block, as the Java client writes them.
const XERIAL_BLOCK_BYTES: usize = 32 << 10;
/// Largest decompressed batch: a produced batch that decompresses to more is
/// refused, and consumers accept the same, so whatever a broker stored can be
/// read. Far above what producers write (their batches are a few MiB at most
/// before compression), low enough that a small, hostile batch cannot make a
/// broker or consumer allocate without bound.
pub const DECOMPRESSED_BATCH_BYTES_MAX: usize = 64 << 20;

/// zstd level the Java client and librdkafka use by default.
const ZSTD_LEVEL: i32 = 3;

/// Appends `records` compressed with `codec` to `out`.
pub fn compress(codec: Compression, records: &[u8], out: &mut Vec<u8>) {
    // Every encoder writes into memory, where writing cannot fail.
    const IN_MEMORY: &str = "compressing into memory cannot fail";
    match codec {
        Compression::None => out.extend_from_slice(records),
        Compression::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
            encoder.write_all(records).expect(IN_MEMORY);
            encoder.finish().expect(IN_MEMORY);
        }
        Compression::Snappy => {
            out.extend_from_slice(&XERIAL_HEADER);
            let mut encoder = snap::raw::Encoder::new();
            for block in records.chunks(XERIAL_BLOCK_BYTES) {
                let length_at = out.len();
                out.extend_from_slice(&[0; 4]);
                let start = out.len();
                out.resize(start + snap::raw::max_compress_len(block.len()), 0);
                let written = encoder.compress(block, &mut out[start..]).expect(IN_MEMORY);
                out.truncate(start + written);
                out[length_at..start].copy_from_slice(&(written as u32).to_be_bytes());
            }
        }
        Compression::Lz4 => {
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .block_mode(lz4_flex::frame::BlockMode::Independent);
            let mut encoder = lz4_flex::frame::FrameEncoder::with_frame_info(info, out);
            encoder.write_all(records).expect(IN_MEMORY);
            encoder.finish().expect(IN_MEMORY);
        }
        Compression::Zstd => {
            let mut encoder = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL).expect(IN_MEMORY);
            encoder.write_all(records).expect(IN_MEMORY);
            encoder.finish().expect(IN_MEMORY);
        }
    }
}

/// The records of `batch` (one whole batch, header included): borrowed from
/// it when uncompressed, decompressed otherwise. Decompression stops past
/// `limit_bytes`, so a small hostile batch cannot claim unbounded memory.
pub fn batch_records(batch: &[u8], limit_bytes: usize) -> Result<Cow<'_, [u8]>, BatchError> {
    let header = BatchHeader::parse(batch)?;
    let codec = header.compression();
    let records = &batch[BATCH_HEADER_BYTES..header.total_bytes()];
    if codec == Compression::None {
        return Ok(Cow::Borrowed(records));
    }
    decompress(codec, records, limit_bytes)
        .map(Cow::Owned)
        .map_err(|reason| BatchError::Decompression { codec, reason })
}

fn decompress(
    codec: Compression,
    compressed: &[u8],
    limit_bytes: usize,
) -> Result<Vec<u8>, String> {
    match codec {
        Compression::None => bounded(compressed, limit_bytes),
        Compression::Gzip => read_bounded(flate2::read::GzDecoder::new(compressed), limit_bytes),
        Compression::Snappy => match compressed.strip_prefix(&XERIAL_HEADER[..8]) {
            Some(framed) => unframe_xerial(framed, limit_bytes),
            None => snappy_block(compressed, limit_bytes),
        },
        Compression::Lz4 => {
            read_bounded(lz4_flex::frame::FrameDecoder::new(compressed), limit_bytes)
        }
        Compression::Zstd => {
            let decoder =
                zstd::stream::read::Decoder::new(compressed).map_err(|error| error.to_string())?;
            read_bounded(decoder, limit_bytes)
        }
    }
}

fn bounded(bytes: &[u8], limit_bytes: usize) -> Result<Vec<u8>, String> {
    if bytes.len() > limit_bytes {
        return Err(format!("records exceed {limit_bytes} bytes"));
    }
    Ok(bytes.to_vec())
}

fn read_bounded(reader: impl Read, limit_bytes: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    reader
        .take(limit_bytes as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|error| error.to_string())?;
    if out.len() > limit_bytes {
        return Err(format!("records exceed {limit_bytes} bytes"));
    }
    Ok(out)
}

/// Raw snappy blocks after the xerial magic: two version words, then
/// `[length u32][block]` until the end.
fn unframe_xerial(framed: &[u8], limit_bytes: usize) -> Result<Vec<u8>, String> {
    let mut rest = framed.get(8..).ok_or("xerial snappy header is truncated")?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (length, after) = rest
            .split_at_checked(4)
            .ok_or("xerial block length is truncated")?;
        let length = u32::from_be_bytes(length.try_into().expect("4 bytes")) as usize;
        let (block, after) = after
            .split_at_checked(length)
            .ok_or("xerial block runs past the batch")?;
        append_snappy_block(block, &mut out, limit_bytes)?;
        rest = after;
    }
    Ok(out)
}

fn snappy_block(block: &[u8], limit_bytes: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    append_snappy_block(block, &mut out, limit_bytes)?;
    Ok(out)
}

/// Decompresses one raw snappy block onto the end of `out`, which may not
/// grow past `limit_bytes`.
fn append_snappy_block(block: &[u8], out: &mut Vec<u8>, limit_bytes: usize) -> Result<(), String> {
    let length = snap::raw::decompress_len(block).map_err(|error| error.to_string())?;
    if out.len() + length > limit_bytes {
        return Err(format!("records exceed {limit_bytes} bytes"));
    }
    let start = out.len();
    out.resize(start + length, 0);
    snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(|error| error.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CODECS: [Compression; 5] = Compression::ALL;

    #[test]
    fn every_codec_round_trips_and_respects_the_limit() {
        let records: Vec<u8> = (0..200_000u32)
            .flat_map(|n| (n % 251).to_le_bytes())
            .collect();
        for codec in CODECS {
            let mut compressed = Vec::new();
            compress(codec, &records, &mut compressed);
            assert_eq!(
                decompress(codec, &compressed, records.len()).unwrap(),
                records,
                "{codec:?}"
            );
            assert!(
                decompress(codec, &compressed, records.len() - 1).is_err(),
                "{codec:?} stays within the limit"
            );
        }
    }

    #[test]
    fn a_built_compressed_batch_validates_and_reads_back() {
        use crate::record::{BatchBuilder, Header, Record, RecordIter};
        use crate::validate::{Source, ValidatedBatches};

        let headers = [Header {
            key: "trace",
            value: Some(b"abc"),
        }];
        for codec in CODECS {
            let mut builder = BatchBuilder::new(1_000).compression(codec);
            for index in 0..500u32 {
                let value = format!("value {index} ").repeat(20);
                builder.push(Record {
                    key: Some(b"key"),
                    value: Some(value.as_bytes()),
                    headers: &headers,
                    timestamp_ms: Some(1_000 + i64::from(index)),
                });
            }
            let bytes = builder.build();
            let batches = ValidatedBatches::validate(&bytes, Source::Producer, usize::MAX).unwrap();
            assert_eq!(batches.offset_count(), 500, "{codec:?}");
            let header = BatchHeader::parse(&bytes).unwrap();
            assert_eq!(header.compression(), codec);
            if codec != Compression::None {
                assert!(
                    bytes.len() < 500 * 100,
                    "{codec:?} compresses: {} bytes",
                    bytes.len()
                );
                assert!(
                    RecordIter::new(&bytes).is_err(),
                    "compressed records need decompressing"
                );
            }
            let records = batch_records(&bytes, 1 << 20).unwrap();
            let read: Vec<_> = RecordIter::from_records(&records, header.record_count)
                .map(|record| record.unwrap())
                .collect();
            assert_eq!(read.len(), 500);
            assert_eq!(read[499].offset_delta, 499);
            assert_eq!(read[499].timestamp_delta, 499);
            assert_eq!(read[7].value.unwrap(), "value 7 ".repeat(20).as_bytes());
            assert_eq!(read[7].headers().collect::<Vec<_>>(), headers);
        }
    }

    #[test]
    fn a_producer_batch_whose_records_do_not_decompress_is_refused() {
        use crate::batch::seal_crc;
        use crate::record::{BatchBuilder, Record};
        use crate::validate::{Source, ValidatedBatches};

        let mut builder = BatchBuilder::new(0).compression(Compression::Lz4);
        for _ in 0..100 {
            builder.push(Record::value(b"some value"));
        }
        let mut bytes = builder.build();
        // Damage the compressed records and seal the CRC again, as a buggy
        // producer would: the header and CRC check out, the records do not.
        let middle = (BATCH_HEADER_BYTES + bytes.len()) / 2;
        bytes[middle..].iter_mut().for_each(|byte| *byte ^= 0x5a);
        seal_crc(&mut bytes);
        let error = ValidatedBatches::validate(&bytes, Source::Producer, usize::MAX).unwrap_err();
        assert!(
            matches!(
                error.source,
                BatchError::Decompression {
                    codec: Compression::Lz4,
                    ..
                }
            ),
            "{error}"
        );

        // A bomb: a small batch whose records decompress past the limit.
        let zeros = vec![0u8; DECOMPRESSED_BATCH_BYTES_MAX];
        let mut builder = BatchBuilder::new(0).compression(Compression::Zstd);
        builder.push(Record::value(&zeros));
        let bomb = builder.build();
        assert!(bomb.len() < 64 << 10, "{} bytes", bomb.len());
        let error = ValidatedBatches::validate(&bomb, Source::Producer, usize::MAX).unwrap_err();
        assert!(error.to_string().contains("records exceed"), "{error}");
    }

    #[test]
    fn a_raw_snappy_block_is_read_too() {
        let records = b"records written by a client without xerial framing".repeat(10);
        let block = snap::raw::Encoder::new().compress_vec(&records).unwrap();
        assert_eq!(
            decompress(Compression::Snappy, &block, 1 << 20).unwrap(),
            records
        );
    }

    #[test]
    fn damaged_streams_are_errors() {
        let records = vec![7u8; 10_000];
        for codec in &CODECS[1..] {
            let mut compressed = Vec::new();
            compress(*codec, &records, &mut compressed);
            let half = &compressed[..compressed.len() / 2];
            assert!(
                decompress(*codec, half, 1 << 20).is_err(),
                "{codec:?} truncated"
            );
            assert!(
                decompress(*codec, b"not a stream at all", 1 << 20).is_err(),
                "{codec:?} garbage"
            );
        }
    }
}
