//! Kafka's RecordBatch v2 (magic 2): header parsing, validation and stamping.
//!
//! A batch is stored byte for byte as the producer sent it. The broker only
//! rewrites the two fields that sit outside the CRC: the base offset and the
//! partition leader epoch.
//!
//! Layout (all integers big-endian):
//!
//! ```text
//! position size field
//!  0        8   base_offset
//!  8        4   batch_length            bytes after this field
//! 12        4   partition_leader_epoch
//! 16        1   magic                   always 2
//! 17        4   crc                     CRC-32C of bytes 21..end
//! 21        2   attributes              bits 0-2 compression, 3 timestamp type,
//!                                       4 transactional, 5 control
//! 23        4   last_offset_delta
//! 27        8   base_timestamp
//! 35        8   max_timestamp
//! 43        8   producer_id
//! 51        2   producer_epoch
//! 53        4   base_sequence
//! 57        4   record_count
//! 61        ..  records
//! ```
//!
//! Unverified bytes become a `ValidatedBatches` only through
//! `validate::ValidatedBatches::validate`; storage appends nothing else.

use thiserror::Error;

/// Bytes before `batch_length` is counted: the base offset and the length itself.
pub const LOG_OVERHEAD: usize = 12;
/// Size of the fixed batch header, up to the first record.
pub const BATCH_HEADER_BYTES: usize = 61;
/// The only record-batch format Strata stores.
pub const MAGIC_V2: i8 = 2;

const BASE_OFFSET_POSITION: usize = 0;
pub(crate) const BATCH_LENGTH_POSITION: usize = 8;
const PARTITION_LEADER_EPOCH_POSITION: usize = 12;
pub(crate) const MAGIC_POSITION: usize = 16;
const CRC_POSITION: usize = 17;
/// The CRC covers everything from the attributes to the end of the batch.
const CRC_COVERED_FROM: usize = 21;
const ATTRIBUTES_POSITION: usize = 21;
const LAST_OFFSET_DELTA_POSITION: usize = 23;
const BASE_TIMESTAMP_POSITION: usize = 27;
const MAX_TIMESTAMP_POSITION: usize = 35;
const PRODUCER_ID_POSITION: usize = 43;
const PRODUCER_EPOCH_POSITION: usize = 51;
const BASE_SEQUENCE_POSITION: usize = 53;
pub(crate) const RECORD_COUNT_POSITION: usize = 57;

/// Smallest legal `batch_length`: a header with no records.
const BATCH_LENGTH_MIN: i32 = (BATCH_HEADER_BYTES - LOG_OVERHEAD) as i32;

pub(crate) const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_FLAG: i16 = 0x08;
pub(crate) const TRANSACTIONAL_FLAG: i16 = 0x10;
pub(crate) const CONTROL_FLAG: i16 = 0x20;

/// An idempotent producer's id, as a batch carries it (`ProducerId::NONE`:
/// the batch is not from an idempotent producer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProducerId(pub i64);

impl ProducerId {
    /// A batch of a producer that is not idempotent.
    pub const NONE: ProducerId = ProducerId(-1);
}

impl std::fmt::Display for ProducerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// What is wrong with a batch, named precisely enough to log and to map to a
/// wire error code.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BatchError {
    #[error("batch is truncated: needs {needed} bytes, {available} present")]
    Truncated { needed: usize, available: usize },
    #[error("batch length {batch_length} is out of range (minimum {BATCH_LENGTH_MIN}, maximum {maximum})")]
    Length { batch_length: i32, maximum: usize },
    #[error("unsupported magic {found} (only record batch v2, magic 2, is stored)")]
    Magic { found: i8 },
    #[error("CRC-32C mismatch: batch says {stored:#010x}, bytes give {computed:#010x}")]
    Crc { stored: u32, computed: u32 },
    #[error("record count {record_count} does not match last offset delta {last_offset_delta}")]
    RecordCount {
        record_count: i32,
        last_offset_delta: i32,
    },
    #[error("record {record_index} has offset delta {found}, expected {record_index}")]
    OffsetDelta { record_index: usize, found: i64 },
    #[error("record {record_index} is malformed: {reason}")]
    Record {
        record_index: usize,
        reason: &'static str,
    },
    #[error("{0}")]
    Producer(&'static str),
    #[error("unknown compression codec {codec}")]
    Compression { codec: i16 },
    #[error("cannot decompress {codec:?} records: {reason}")]
    Decompression { codec: Compression, reason: String },
}

/// A batch error together with the byte position of the batch in the input.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid record batch at byte {position}: {source}")]
pub struct InvalidBatch {
    pub position: usize,
    #[source]
    pub source: BatchError,
}

/// Compression codec from the low three attribute bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    /// Every codec, in attribute-bit order.
    pub const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    pub(crate) fn from_attributes(attributes: i16) -> Result<Self, BatchError> {
        Ok(match attributes & COMPRESSION_MASK {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            codec => return Err(BatchError::Compression { codec }),
        })
    }

    /// The codec's name in Kafka's `compression.type`.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    pub(crate) fn attribute_bits(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = String;

    /// Parses a `compression.type` name: none, gzip, snappy, lz4 or zstd.
    fn from_str(name: &str) -> Result<Self, String> {
        Compression::ALL
            .into_iter()
            .find(|codec| codec.name() == name)
            .ok_or_else(|| {
                format!("unknown compression {name:?}: use none, gzip, snappy, lz4 or zstd")
            })
    }
}

/// The fixed header of one batch. [`BatchHeader::parse`] reads one (checking
/// that `batch_length` is in range and the magic is 2);
/// [`BatchHeader::write_sealed`] writes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: ProducerId,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    /// Parses the header at the start of `bytes`, checking that the length and
    /// magic are sane and that `bytes` holds the whole batch. Does not check the
    /// CRC; see [`BatchHeader::validate`].
    pub fn parse(bytes: &[u8]) -> Result<Self, BatchError> {
        Self::parse_bounded(bytes, usize::MAX)
    }

    /// Like [`BatchHeader::parse`], refusing batches larger than `batch_bytes_max`.
    pub fn parse_bounded(bytes: &[u8], batch_bytes_max: usize) -> Result<Self, BatchError> {
        if bytes.len() < BATCH_HEADER_BYTES {
            return Err(BatchError::Truncated {
                needed: BATCH_HEADER_BYTES,
                available: bytes.len(),
            });
        }
        let batch_length = read_i32(bytes, BATCH_LENGTH_POSITION);
        let maximum = batch_bytes_max
            .saturating_sub(LOG_OVERHEAD)
            .min(i32::MAX as usize);
        if batch_length < BATCH_LENGTH_MIN || batch_length as usize > maximum {
            return Err(BatchError::Length {
                batch_length,
                maximum,
            });
        }
        let magic = bytes[MAGIC_POSITION] as i8;
        if magic != MAGIC_V2 {
            return Err(BatchError::Magic { found: magic });
        }
        let total_bytes = LOG_OVERHEAD + batch_length as usize;
        if bytes.len() < total_bytes {
            return Err(BatchError::Truncated {
                needed: total_bytes,
                available: bytes.len(),
            });
        }
        Ok(BatchHeader {
            base_offset: read_i64(bytes, BASE_OFFSET_POSITION),
            batch_length,
            partition_leader_epoch: read_i32(bytes, PARTITION_LEADER_EPOCH_POSITION),
            crc: read_u32(bytes, CRC_POSITION),
            attributes: read_i16(bytes, ATTRIBUTES_POSITION),
            last_offset_delta: read_i32(bytes, LAST_OFFSET_DELTA_POSITION),
            base_timestamp: read_i64(bytes, BASE_TIMESTAMP_POSITION),
            max_timestamp: read_i64(bytes, MAX_TIMESTAMP_POSITION),
            producer_id: ProducerId(read_i64(bytes, PRODUCER_ID_POSITION)),
            producer_epoch: read_i16(bytes, PRODUCER_EPOCH_POSITION),
            base_sequence: read_i32(bytes, BASE_SEQUENCE_POSITION),
            record_count: read_i32(bytes, RECORD_COUNT_POSITION),
        })
    }

    /// Parses and fully checks a batch as stored in a log or sent by a replica:
    /// length, magic, CRC, and a record count consistent with the offset range.
    /// Compaction may leave fewer records than offsets, so the count may be
    /// smaller than `last_offset_delta + 1`, never larger.
    pub fn validate(bytes: &[u8], batch_bytes_max: usize) -> Result<Self, BatchError> {
        let header = Self::parse_bounded(bytes, batch_bytes_max)?;
        let computed = crc32c::crc32c(&bytes[CRC_COVERED_FROM..header.total_bytes()]);
        if computed != header.crc {
            return Err(BatchError::Crc {
                stored: header.crc,
                computed,
            });
        }
        Compression::from_attributes(header.attributes)?;
        if header.last_offset_delta < 0
            || header.record_count < 0
            || header.record_count as i64 > header.last_offset_delta as i64 + 1
        {
            return Err(BatchError::RecordCount {
                record_count: header.record_count,
                last_offset_delta: header.last_offset_delta,
            });
        }
        Ok(header)
    }

    /// Size of the whole batch in bytes, header included.
    pub fn total_bytes(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }

    /// Offset of the last record in the batch.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }

    /// Number of offsets the batch spans (compaction may leave fewer records).
    pub fn offset_count(&self) -> u64 {
        self.last_offset_delta as u64 + 1
    }

    pub fn compression(&self) -> Compression {
        Compression::from_attributes(self.attributes).unwrap_or(Compression::None)
    }

    /// True when the timestamps were set by the broker (LogAppendTime).
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_FLAG != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_FLAG != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_FLAG != 0
    }
}

impl BatchHeader {
    /// Writes every field of this header into the start of `batch` (whose
    /// records follow it) and seals the CRC. The one place a header is
    /// written whole: the batch builder and compaction both use it.
    pub fn write_sealed(&self, batch: &mut [u8]) {
        assert_eq!(
            batch.len(),
            self.total_bytes(),
            "the header's length describes the batch"
        );
        let mut put = |position: usize, bytes: &[u8]| {
            batch[position..position + bytes.len()].copy_from_slice(bytes)
        };
        put(BASE_OFFSET_POSITION, &self.base_offset.to_be_bytes());
        put(BATCH_LENGTH_POSITION, &self.batch_length.to_be_bytes());
        put(
            PARTITION_LEADER_EPOCH_POSITION,
            &self.partition_leader_epoch.to_be_bytes(),
        );
        put(MAGIC_POSITION, &[MAGIC_V2 as u8]);
        put(ATTRIBUTES_POSITION, &self.attributes.to_be_bytes());
        put(
            LAST_OFFSET_DELTA_POSITION,
            &self.last_offset_delta.to_be_bytes(),
        );
        put(BASE_TIMESTAMP_POSITION, &self.base_timestamp.to_be_bytes());
        put(MAX_TIMESTAMP_POSITION, &self.max_timestamp.to_be_bytes());
        put(PRODUCER_ID_POSITION, &self.producer_id.0.to_be_bytes());
        put(PRODUCER_EPOCH_POSITION, &self.producer_epoch.to_be_bytes());
        put(BASE_SEQUENCE_POSITION, &self.base_sequence.to_be_bytes());
        put(RECORD_COUNT_POSITION, &self.record_count.to_be_bytes());
        seal_crc(batch);
    }
}

/// Writes the base offset and partition leader epoch into a batch. Both fields
/// lie outside the CRC, so the batch stays valid.
pub fn stamp(batch: &mut [u8], base_offset: i64, partition_leader_epoch: i32) {
    batch[BASE_OFFSET_POSITION..BASE_OFFSET_POSITION + 8]
        .copy_from_slice(&base_offset.to_be_bytes());
    batch[PARTITION_LEADER_EPOCH_POSITION..PARTITION_LEADER_EPOCH_POSITION + 4]
        .copy_from_slice(&partition_leader_epoch.to_be_bytes());
}

/// Rewrites an idempotent producer's fields of a built batch (a producer
/// that had to start its sequences over under a new producer id) and the
/// CRC, which covers them.
pub fn restamp_producer(
    batch: &mut [u8],
    producer_id: ProducerId,
    producer_epoch: i16,
    base_sequence: i32,
) {
    batch[PRODUCER_ID_POSITION..PRODUCER_ID_POSITION + 8]
        .copy_from_slice(&producer_id.0.to_be_bytes());
    batch[PRODUCER_EPOCH_POSITION..PRODUCER_EPOCH_POSITION + 2]
        .copy_from_slice(&producer_epoch.to_be_bytes());
    batch[BASE_SEQUENCE_POSITION..BASE_SEQUENCE_POSITION + 4]
        .copy_from_slice(&base_sequence.to_be_bytes());
    seal_crc(batch);
}

/// Computes and writes the CRC of a batch whose other fields are final.
pub(crate) fn seal_crc(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[CRC_COVERED_FROM..]);
    batch[CRC_POSITION..CRC_POSITION + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Iterates whole batches of bytes known to hold only valid batches.
#[derive(Debug, Clone)]
pub struct BatchIter<'a> {
    bytes: &'a [u8],
}

impl<'a> BatchIter<'a> {
    /// Iterates the batches in `bytes`, stopping at the first one that does not
    /// parse (a reader may hand a partial trailing batch to a client).
    pub fn new(bytes: &'a [u8]) -> Self {
        BatchIter { bytes }
    }
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = (BatchHeader, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let header = BatchHeader::parse(self.bytes).ok()?;
        let (batch, rest) = self.bytes.split_at(header.total_bytes());
        self.bytes = rest;
        Some((header, batch))
    }
}

pub(crate) fn read_i16(bytes: &[u8], position: usize) -> i16 {
    i16::from_be_bytes(bytes[position..position + 2].try_into().expect("two bytes"))
}

pub(crate) fn read_i32(bytes: &[u8], position: usize) -> i32 {
    i32::from_be_bytes(
        bytes[position..position + 4]
            .try_into()
            .expect("four bytes"),
    )
}

pub(crate) fn read_u32(bytes: &[u8], position: usize) -> u32 {
    u32::from_be_bytes(
        bytes[position..position + 4]
            .try_into()
            .expect("four bytes"),
    )
}

pub(crate) fn read_i64(bytes: &[u8], position: usize) -> i64 {
    i64::from_be_bytes(
        bytes[position..position + 8]
            .try_into()
            .expect("eight bytes"),
    )
}
