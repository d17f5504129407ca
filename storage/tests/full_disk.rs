//! A full disk is an error at preallocation time, never a SIGBUS, and loses
//! nothing that was appended before it.
//!
//! The disk is a 2 MiB tmpfs, so the test needs root (as CI has). Without the
//! right to mount it says so and checks nothing.

mod harness;

use std::path::{Path, PathBuf};
use std::process::Command;

use harness::{append, read_all, values};
use strata_storage::validate::{Source, ValidatedBatches};
use strata_storage::{LogConfig, PartitionLog, StorageError};

const ENOSPC: i32 = 28;

struct Tmpfs {
    mount_point: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let mount_point = dir.path().to_path_buf();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&mount_point)
            .status()
            .ok()?;
        status.success().then_some(Tmpfs {
            mount_point,
            _dir: dir,
        })
    }

    fn path(&self) -> &Path {
        &self.mount_point
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.mount_point)
            .status();
    }
}

#[test]
fn a_full_disk_is_an_error_and_loses_nothing() {
    let Some(disk) = Tmpfs::mount("2m") else {
        eprintln!("not checked: mounting a tmpfs needs root");
        return;
    };
    let path = disk.path().join("t-0");
    let config = LogConfig {
        segment_bytes: 1 << 20,
        preallocate_bytes: 256 << 10,
        ..LogConfig::default()
    };
    let mut log = PartitionLog::open(&path, config.clone()).unwrap();
    let mut acknowledged = Vec::new();
    let error = loop {
        let values = values(acknowledged.len() as u64, 4, 10_000);
        let bytes = harness::batch(&values, 0);
        let batches = ValidatedBatches::validate(&bytes, Source::Producer, usize::MAX).unwrap();
        match log.append_as_leader(&batches, 0, 0) {
            Ok(info) => acknowledged.extend((info.first_offset..).zip(values)),
            Err(error) => break error,
        }
        assert!(
            acknowledged.len() < 10_000,
            "a 2 MiB disk cannot take 400 MB"
        );
    };
    match &error {
        StorageError::Io { source, .. } => {
            assert_eq!(source.raw_os_error(), Some(ENOSPC), "{error}")
        }
        other => panic!("expected an I/O error, got {other}"),
    }
    assert!(
        acknowledged.len() > 40,
        "the disk took about a megabyte first"
    );
    assert_eq!(
        read_all(&log, 1 << 20),
        acknowledged,
        "everything appended is readable"
    );
    assert_eq!(log.log_end_offset(), acknowledged.len() as i64);

    // The failed append left no trace; the log reopens with exactly what was appended.
    drop(log);
    let mut log = PartitionLog::open(&path, config).unwrap();
    assert_eq!(read_all(&log, 1 << 20), acknowledged);

    // Freeing space lets appends continue.
    let end = log.log_end_offset();
    log.delete_records_before(end).unwrap();
    log.set_config(LogConfig {
        retention_bytes: Some(0),
        ..log.config().clone()
    })
    .unwrap();
    log.enforce_retention(0, end).unwrap();
    let info = append(&mut log, &values(7, 1, 100), 0);
    assert_eq!(info.first_offset, end);
}
