//! Strata's own small files: offset and time indexes, the log checkpoint and the
//! leader-epoch checkpoint. Each is one payload behind a fixed header guarded by
//! CRC-32 (crc32fast), so a torn or stale write is detected, never trusted.
//!
//! ```text
//! position size field
//!  0        4   magic            identifies the kind of file
//!  4        1   version          1
//!  5        3   reserved         zero
//!  8        4   payload_bytes
//! 12        4   crc              CRC-32 of the payload
//! 16        ..  payload
//! ```
//!
//! Writes go to `NAME.tmp` and are renamed over `NAME`, so a reader sees the
//! old file or the new one, never a mix.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{io_error, Result};

const HEADER_BYTES: usize = 16;
/// The reason [`read`] gives for a file of another kind (or format).
pub const WRONG_MAGIC: &str = "wrong magic";
const VERSION: u8 = 1;

/// What was found at a checkpoint's path.
#[derive(Debug, PartialEq, Eq)]
pub enum Loaded {
    Missing,
    /// Present but unusable: the reason says why.
    Damaged(&'static str),
    Intact(Vec<u8>),
}

/// Whether a write must be on disk before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync the file and its directory: the caller's promise depends on it.
    Synced,
    /// Leave it to the page cache: a lost write is detected and rebuilt.
    Cached,
}

pub fn write(path: &Path, magic: [u8; 4], payload: &[u8], durability: Durability) -> Result<()> {
    let mut bytes = Vec::with_capacity(HEADER_BYTES + payload.len());
    bytes.extend_from_slice(&magic);
    bytes.extend_from_slice(&[VERSION, 0, 0, 0]);
    bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&crc32fast::hash(payload).to_be_bytes());
    bytes.extend_from_slice(payload);

    let tmp = tmp_path(path);
    let mut file = File::create(&tmp).map_err(io_error("create", &tmp))?;
    file.write_all(&bytes).map_err(io_error("write", &tmp))?;
    if durability == Durability::Synced {
        file.sync_all().map_err(io_error("fsync", &tmp))?;
    }
    drop(file);
    fs::rename(&tmp, path).map_err(io_error("rename into place", path))?;
    if durability == Durability::Synced {
        sync_dir(
            path.parent()
                .expect("checkpoint files live in a partition directory"),
        )?;
    }
    Ok(())
}

pub fn read(path: &Path, magic: [u8; 4]) -> Result<Loaded> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded::Missing),
        Err(error) => return Err(io_error("read", path)(error)),
    };
    if bytes.len() < HEADER_BYTES {
        return Ok(Loaded::Damaged("shorter than its header"));
    }
    if bytes[0..4] != magic {
        return Ok(Loaded::Damaged(WRONG_MAGIC));
    }
    if bytes[4] != VERSION {
        return Ok(Loaded::Damaged("unknown version"));
    }
    let payload_bytes = u32::from_be_bytes(bytes[8..12].try_into().expect("four bytes")) as usize;
    if bytes.len() != HEADER_BYTES + payload_bytes {
        return Ok(Loaded::Damaged("length does not match its header"));
    }
    let crc = u32::from_be_bytes(bytes[12..16].try_into().expect("four bytes"));
    let payload = bytes[HEADER_BYTES..].to_vec();
    if crc32fast::hash(&payload) != crc {
        return Ok(Loaded::Damaged("CRC mismatch"));
    }
    Ok(Loaded::Intact(payload))
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|dir_file| dir_file.sync_all())
        .map_err(io_error("fsync directory", dir))
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .expect("checkpoint path has a file name")
        .to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Big-endian payload reader that reports a short payload instead of panicking.
pub(crate) struct PayloadReader<'a> {
    bytes: &'a [u8],
}

impl<'a> PayloadReader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        PayloadReader { bytes }
    }

    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        if self.bytes.len() < N {
            return None;
        }
        let (taken, rest) = self.bytes.split_at(N);
        self.bytes = rest;
        Some(taken.try_into().expect("N bytes"))
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|[byte]| byte)
    }

    pub(crate) fn i16(&mut self) -> Option<i16> {
        self.take::<2>().map(i16::from_be_bytes)
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.take::<4>().map(u32::from_be_bytes)
    }

    pub(crate) fn i32(&mut self) -> Option<i32> {
        self.take::<4>().map(i32::from_be_bytes)
    }

    pub(crate) fn i64(&mut self) -> Option<i64> {
        self.take::<8>().map(i64::from_be_bytes)
    }

    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.take::<8>().map(u64::from_be_bytes)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub(crate) fn remaining_bytes(&self) -> usize {
        self.bytes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage_detection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.checkpoint");
        assert_eq!(read(&path, *b"TEST").unwrap(), Loaded::Missing);
        write(&path, *b"TEST", b"payload", Durability::Synced).unwrap();
        assert_eq!(
            read(&path, *b"TEST").unwrap(),
            Loaded::Intact(b"payload".to_vec())
        );
        assert_eq!(
            read(&path, *b"OTHR").unwrap(),
            Loaded::Damaged("wrong magic")
        );

        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        fs::write(&path, &bytes).unwrap();
        assert_eq!(
            read(&path, *b"TEST").unwrap(),
            Loaded::Damaged("CRC mismatch")
        );
        fs::write(&path, &bytes[..10]).unwrap();
        assert_eq!(
            read(&path, *b"TEST").unwrap(),
            Loaded::Damaged("shorter than its header")
        );
    }
}
