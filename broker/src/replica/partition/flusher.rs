//! A partition's flusher task: fsyncs the log when asked (acks=all) or
//! every `flush.ms`, outside the log's lock, then publishes the durable
//! end, which moves the high watermark.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tracing::{error, warn};

use super::Partition;

impl Partition {
    /// Flushes when asked or every `flush.ms`, then publishes the new durable
    /// end and moves the high watermark.
    pub(super) async fn run_flusher(self: Arc<Self>) {
        let partition = self;
        loop {
            let flush_interval = Duration::from_millis(partition.config().flush_ms);
            tokio::select! {
                _ = partition.stop.cancelled() => return,
                _ = partition.flush_wanted.notified() => {}
                _ = tokio::time::sleep(flush_interval) => {}
            }
            partition.unflushed_bytes.store(0, Ordering::Release);
            let pending = match partition.log().begin_flush() {
                Ok(Some(pending)) => pending,
                Ok(None) => continue,
                Err(error) => {
                    warn!(partition = ?partition, %error, "log is stopped; the flusher exits");
                    return;
                }
            };
            let (pending, outcome) = match tokio::task::spawn_blocking(move || {
                let outcome = pending.sync();
                (pending, outcome)
            })
            .await
            {
                Ok(done) => done,
                Err(join_error) => {
                    error!(partition = ?partition, %join_error, "flush task failed");
                    return;
                }
            };
            let recovery_point = {
                let mut log = partition.log();
                if let Err(error) = log.complete_flush(pending, outcome) {
                    error!(partition = ?partition, %error, "flush failed; the partition stops");
                    return;
                }
                log.recovery_point()
            };
            partition.durable.send_replace(recovery_point);
            partition.refresh_high_watermark();
        }
    }
}

impl Partition {
    /// Waits until everything below `offset` is durable here, asking for a
    /// flush; false if `timeout` passed first.
    pub async fn wait_flushed(&self, offset: i64, timeout: Duration) -> bool {
        let mut durable = self.durable.subscribe();
        self.flush_wanted.notify_one();
        tokio::time::timeout(timeout, durable.wait_for(|&durable| durable >= offset))
            .await
            .is_ok_and(|changed| changed.is_ok())
    }

    /// Everything below this offset is durable here.
    pub fn durable_end(&self) -> i64 {
        *self.durable.borrow()
    }
}
