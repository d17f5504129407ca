//! Records inside a v2 batch: varint codec, a batch builder, a record reader.
//!
//! Record layout (Kafka's, varints are zigzag-encoded):
//!
//! ```text
//! length            varint   bytes after this field
//! attributes        int8     unused, 0
//! timestamp_delta   varlong  from the batch's base timestamp
//! offset_delta      varint   from the batch's base offset
//! key_length        varint   -1 for a null key
//! key               bytes
//! value_length      varint   -1 for a null value
//! value             bytes
//! header_count      varint
//!   header_key_length varint, header_key (UTF-8), header_value_length varint, header_value
//! ```

use crate::batch::{self, BatchError, BatchHeader, Compression, ProducerId, BATCH_HEADER_BYTES};

/// A header on a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    pub key: &'a str,
    pub value: Option<&'a [u8]>,
}

/// A record to put into a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Record<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: &'a [Header<'a>],
    /// Create time in milliseconds; the batch's base timestamp when `None`.
    pub timestamp_ms: Option<i64>,
}

impl<'a> Record<'a> {
    /// A record with a value and nothing else.
    pub fn value(value: &'a [u8]) -> Self {
        Record {
            value: Some(value),
            ..Record::default()
        }
    }

    /// A record with a key and a value.
    pub fn keyed(key: &'a [u8], value: &'a [u8]) -> Self {
        Record {
            key: Some(key),
            value: Some(value),
            ..Record::default()
        }
    }
}

/// Builds one uncompressed v2 batch. The base offset is left at 0 for the
/// leader to stamp.
///
/// ```
/// use strata_storage::record::{BatchBuilder, Record};
/// use strata_storage::validate::{Source, ValidatedBatches};
///
/// let mut builder = BatchBuilder::new(1_700_000_000_000);
/// builder.push(Record::keyed(b"user-1", b"signed up"));
/// builder.push(Record::value(b"no key"));
/// let bytes = builder.build();
/// let batches = ValidatedBatches::validate(&bytes, Source::Producer, 1 << 20).unwrap();
/// assert_eq!(batches.offset_count(), 2);
/// ```
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    buf: Vec<u8>,
    base_timestamp_ms: i64,
    max_timestamp_ms: i64,
    record_count: i32,
    producer_id: ProducerId,
    producer_epoch: i16,
    base_sequence: i32,
    attributes: i16,
}

const NO_PRODUCER_EPOCH: i16 = -1;
const NO_SEQUENCE: i32 = -1;

impl BatchBuilder {
    pub fn new(base_timestamp_ms: i64) -> Self {
        Self::with_capacity(base_timestamp_ms, 1024)
    }

    pub fn with_capacity(base_timestamp_ms: i64, capacity_bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(capacity_bytes.max(BATCH_HEADER_BYTES));
        buf.resize(BATCH_HEADER_BYTES, 0);
        BatchBuilder {
            buf,
            base_timestamp_ms,
            max_timestamp_ms: base_timestamp_ms,
            record_count: 0,
            producer_id: ProducerId::NONE,
            producer_epoch: NO_PRODUCER_EPOCH,
            base_sequence: NO_SEQUENCE,
            attributes: Compression::None.attribute_bits(),
        }
    }

    /// Compresses the records with `codec` when the batch is built.
    pub fn compression(mut self, codec: Compression) -> Self {
        self.attributes = (self.attributes & !batch::COMPRESSION_MASK) | codec.attribute_bits();
        self
    }

    /// Marks the batch as coming from an idempotent producer.
    pub fn producer(
        mut self,
        producer_id: ProducerId,
        producer_epoch: i16,
        base_sequence: i32,
    ) -> Self {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Marks the batch as part of its producer's ongoing transaction.
    pub fn transactional(mut self) -> Self {
        self.attributes |= batch::TRANSACTIONAL_FLAG;
        self
    }

    /// Marks the batch as a control batch (a transaction marker).
    pub(crate) fn control(mut self) -> Self {
        self.attributes |= batch::TRANSACTIONAL_FLAG | batch::CONTROL_FLAG;
        self
    }

    pub fn record_count(&self) -> usize {
        self.record_count as usize
    }

    /// Size of the batch built so far, before compression.
    pub fn size_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Appends a record; its offset delta is its index in the batch.
    pub fn push(&mut self, record: Record<'_>) {
        let timestamp_ms = record.timestamp_ms.unwrap_or(self.base_timestamp_ms);
        self.max_timestamp_ms = self.max_timestamp_ms.max(timestamp_ms);
        let timestamp_delta = timestamp_ms - self.base_timestamp_ms;
        let offset_delta = self.record_count as i64;

        let mut body_bytes = 1 + varint_size(timestamp_delta) + varint_size(offset_delta);
        body_bytes += bytes_field_size(record.key) + bytes_field_size(record.value);
        body_bytes += varint_size(record.headers.len() as i64);
        for header in record.headers {
            body_bytes +=
                bytes_field_size(Some(header.key.as_bytes())) + bytes_field_size(header.value);
        }
        self.buf
            .reserve(varint_size(body_bytes as i64) + body_bytes);
        put_varint(&mut self.buf, body_bytes as i64);
        self.buf.push(0); // attributes
        put_varint(&mut self.buf, timestamp_delta);
        put_varint(&mut self.buf, offset_delta);
        put_bytes_field(&mut self.buf, record.key);
        put_bytes_field(&mut self.buf, record.value);
        put_varint(&mut self.buf, record.headers.len() as i64);
        for header in record.headers {
            put_bytes_field(&mut self.buf, Some(header.key.as_bytes()));
            put_bytes_field(&mut self.buf, header.value);
        }
        self.record_count += 1;
    }

    /// Compresses the records (if asked to) and finishes the header and CRC.
    /// A batch must hold at least one record.
    pub fn build(mut self) -> Vec<u8> {
        assert!(
            self.record_count > 0,
            "a record batch holds at least one record"
        );
        let codec = Compression::from_attributes(self.attributes).expect("set from a codec");
        if codec != Compression::None {
            let records = &self.buf[BATCH_HEADER_BYTES..];
            let mut compressed = Vec::with_capacity(BATCH_HEADER_BYTES + records.len() / 2);
            compressed.resize(BATCH_HEADER_BYTES, 0);
            crate::compression::compress(codec, records, &mut compressed);
            self.buf = compressed;
        }
        BatchHeader {
            base_offset: 0,
            batch_length: (self.buf.len() - batch::LOG_OVERHEAD) as i32,
            partition_leader_epoch: -1,
            crc: 0,
            attributes: self.attributes,
            last_offset_delta: self.record_count - 1,
            base_timestamp: self.base_timestamp_ms,
            max_timestamp: self.max_timestamp_ms,
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            base_sequence: self.base_sequence,
            record_count: self.record_count,
        }
        .write_sealed(&mut self.buf);
        self.buf
    }
}

/// A record read from an uncompressed batch, borrowing the batch's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub timestamp_delta: i64,
    pub offset_delta: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    header_count: usize,
    headers: &'a [u8],
}

impl<'a> RecordView<'a> {
    /// The record's headers; their framing was checked when the record was read.
    pub fn headers(&self) -> impl Iterator<Item = Header<'a>> + 'a {
        let mut cursor = Cursor {
            bytes: self.headers,
        };
        (0..self.header_count).map(move |_| {
            let key = cursor.bytes_field().ok().flatten().unwrap_or_default();
            let value = cursor.bytes_field().ok().flatten();
            Header {
                key: std::str::from_utf8(key).unwrap_or_default(),
                value,
            }
        })
    }
}

/// Iterates the records of one uncompressed batch. Every malformed record is
/// an error, never a panic.
#[derive(Debug, Clone)]
pub struct RecordIter<'a> {
    cursor: Cursor<'a>,
    remaining: usize,
}

impl<'a> RecordIter<'a> {
    /// Reads the records of `batch`, which must be one whole, uncompressed
    /// batch (for any batch, see [`crate::compression::batch_records`] and
    /// [`RecordIter::from_records`]).
    pub fn new(batch: &'a [u8]) -> Result<Self, BatchError> {
        let header = BatchHeader::parse(batch)?;
        if header.compression() != Compression::None {
            return Err(BatchError::Record {
                record_index: 0,
                reason: "records are compressed",
            });
        }
        let records = &batch[BATCH_HEADER_BYTES..header.total_bytes()];
        Ok(Self::from_records(records, header.record_count))
    }

    /// Reads `record_count` records from a batch's records section (as
    /// [`crate::compression::batch_records`] returns it).
    pub fn from_records(records: &'a [u8], record_count: i32) -> Self {
        RecordIter {
            cursor: Cursor { bytes: records },
            remaining: record_count.max(0) as usize,
        }
    }

    /// True when every byte of the batch was consumed by its records.
    pub fn is_exhausted(&self) -> bool {
        self.cursor.bytes.is_empty()
    }

    fn read_record(&mut self) -> Result<RecordView<'a>, &'static str> {
        let length = self.cursor.varint()?;
        if length < 0 || length as usize > self.cursor.bytes.len() {
            return Err("record length exceeds the batch");
        }
        let (body, rest) = self.cursor.bytes.split_at(length as usize);
        self.cursor.bytes = rest;
        let mut body = Cursor { bytes: body };
        body.take(1)?; // attributes
        let timestamp_delta = body.varint()?;
        let offset_delta = body.varint()?;
        let key = body.bytes_field()?;
        let value = body.bytes_field()?;
        let header_count = body.varint()?;
        if header_count < 0 || header_count as usize > body.bytes.len() {
            return Err("header count exceeds the record");
        }
        let headers = body.bytes;
        for _ in 0..header_count {
            let key = body.bytes_field()?.ok_or("header key is null")?;
            std::str::from_utf8(key).map_err(|_utf8_error| "header key is not UTF-8")?;
            body.bytes_field()?;
        }
        if !body.bytes.is_empty() {
            return Err("trailing bytes inside the record");
        }
        Ok(RecordView {
            timestamp_delta,
            offset_delta,
            key,
            value,
            header_count: header_count as usize,
            headers,
        })
    }
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<RecordView<'a>, &'static str>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let record = self.read_record();
        if record.is_err() {
            self.remaining = 0;
        }
        Some(record)
    }
}

#[derive(Debug, Clone)]
struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], &'static str> {
        if count > self.bytes.len() {
            return Err("field runs past the end of the record");
        }
        let (taken, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Ok(taken)
    }

    fn varint(&mut self) -> Result<i64, &'static str> {
        let (value, used) = get_varint(self.bytes).ok_or("malformed varint")?;
        self.bytes = &self.bytes[used..];
        Ok(value)
    }

    fn bytes_field(&mut self) -> Result<Option<&'a [u8]>, &'static str> {
        match self.varint()? {
            -1 => Ok(None),
            length if length < 0 => Err("negative field length"),
            length => self.take(length as usize).map(Some),
        }
    }
}

/// Bytes the zigzag varint encoding of `value` takes.
pub fn varint_size(value: i64) -> usize {
    let zigzag = ((value << 1) ^ (value >> 63)) as u64;
    let bits = 64 - (zigzag | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Appends the zigzag varint encoding of `value`.
pub fn put_varint(buf: &mut Vec<u8>, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    while zigzag >= 0x80 {
        buf.push((zigzag as u8) | 0x80);
        zigzag >>= 7;
    }
    buf.push(zigzag as u8);
}

/// Decodes a zigzag varint, returning the value and the bytes used; `None`
/// when the input ends early or the varint is longer than ten bytes.
pub fn get_varint(bytes: &[u8]) -> Option<(i64, usize)> {
    let mut zigzag = 0u64;
    for (index, byte) in bytes.iter().take(10).enumerate() {
        zigzag |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            let value = (zigzag >> 1) as i64 ^ -((zigzag & 1) as i64);
            return Some((value, index + 1));
        }
    }
    None
}

fn bytes_field_size(field: Option<&[u8]>) -> usize {
    match field {
        None => varint_size(-1),
        Some(bytes) => varint_size(bytes.len() as i64) + bytes.len(),
    }
}

fn put_bytes_field(buf: &mut Vec<u8>, field: Option<&[u8]>) {
    match field {
        None => put_varint(buf, -1),
        Some(bytes) => {
            put_varint(buf, bytes.len() as i64);
            buf.extend_from_slice(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn varint_round_trips(value in any::<i64>()) {
            let mut buf = Vec::new();
            put_varint(&mut buf, value);
            prop_assert_eq!(buf.len(), varint_size(value));
            prop_assert_eq!(get_varint(&buf), Some((value, buf.len())));
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = get_varint(&bytes);
            if let Ok(records) = RecordIter::new(&bytes) {
                for record in records.flatten() {
                    let _ = record.headers().count();
                }
            }
        }

        #[test]
        fn built_records_read_back(
            records in proptest::collection::vec(
                (proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
                 proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
                 0i64..10_000),
                1..20)
        ) {
            let header_value: &[u8] = b"v";
            let headers = [Header { key: "trace", value: Some(header_value) }];
            let mut builder = BatchBuilder::new(5_000);
            for (index, (key, value, timestamp_delta)) in records.iter().enumerate() {
                let headers: &[Header] = if index % 2 == 0 { &headers } else { &[] };
                builder.push(Record {
                    key: key.as_deref(),
                    value: value.as_deref(),
                    headers,
                    timestamp_ms: Some(5_000 + timestamp_delta),
                });
            }
            let bytes = builder.build();
            let read: Vec<_> = RecordIter::new(&bytes).unwrap().map(Result::unwrap).collect();
            prop_assert_eq!(read.len(), records.len());
            for (index, (view, (key, value, timestamp_delta))) in read.iter().zip(&records).enumerate() {
                prop_assert_eq!(view.offset_delta, index as i64);
                prop_assert_eq!(view.timestamp_delta, *timestamp_delta);
                prop_assert_eq!(view.key, key.as_deref());
                prop_assert_eq!(view.value, value.as_deref());
                prop_assert_eq!(view.headers().count(), if index % 2 == 0 { 1 } else { 0 });
            }
            let header = BatchHeader::validate(&bytes, usize::MAX).unwrap();
            let max_delta = records.iter().map(|r| r.2).max().unwrap();
            prop_assert_eq!(header.max_timestamp, 5_000 + max_delta.max(0));
        }
    }

    #[test]
    fn header_values_are_read() {
        let headers = [
            Header {
                key: "k",
                value: None,
            },
            Header {
                key: "trace-id",
                value: Some(b"abc"),
            },
        ];
        let mut builder = BatchBuilder::new(0);
        builder.push(Record {
            headers: &headers,
            ..Record::value(b"v")
        });
        let bytes = builder.build();
        let record = RecordIter::new(&bytes).unwrap().next().unwrap().unwrap();
        assert_eq!(record.headers().collect::<Vec<_>>(), headers);
    }
}
