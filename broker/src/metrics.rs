//! Prometheus metrics, served as text on `--metrics-listen` at `/metrics`.
//!
//! Counters and histograms are atomics behind maps that only grow by one key
//! per API or topic, so recording is a lookup and an atomic add.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::controller::client::ControllerClient;
use crate::group::GroupCoordinator;
use crate::replica::replica_manager::ReplicaManager;

/// Upper bounds of the request latency buckets, in microseconds.
const LATENCY_BUCKETS_US: [u64; 12] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 500_000, 1_000_000,
];
/// Largest metrics HTTP request read before answering.
const HTTP_REQUEST_BYTES_MAX: usize = 8 << 10;

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_US.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

#[derive(Default)]
struct TopicCounters {
    bytes_in: AtomicU64,
    records_in: AtomicU64,
    bytes_out: AtomicU64,
}

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<i16, Arc<Histogram>>>,
    topics: Mutex<BTreeMap<String, Arc<TopicCounters>>>,
    isr_shrinks: AtomicU64,
    isr_expands: AtomicU64,
    unclean_elections: AtomicU64,
}

impl Metrics {
    /// A committed ISR change of a partition led here.
    pub fn record_isr_change(&self, before: usize, after: usize) {
        let counter = if after < before {
            &self.isr_shrinks
        } else {
            &self.isr_expands
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// This broker, leading the controller quorum, gave a partition to a
    /// replica out of sync.
    pub fn record_unclean_election(&self) {
        self.unclean_elections.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_request(&self, api_key: ApiKey, elapsed: Duration) {
        let histogram = Arc::clone(
            self.requests
                .lock()
                .expect("metrics lock")
                .entry(api_key as i16)
                .or_default(),
        );
        let micros = elapsed.as_micros() as u64;
        for (bucket, bound) in histogram.buckets.iter().zip(LATENCY_BUCKETS_US) {
            if micros <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        histogram.count.fetch_add(1, Ordering::Relaxed);
        histogram.sum_us.fetch_add(micros, Ordering::Relaxed);
    }

    fn topic(&self, topic: &str) -> Arc<TopicCounters> {
        let mut topics = self.topics.lock().expect("metrics lock");
        match topics.get(topic) {
            Some(counters) => Arc::clone(counters),
            None => Arc::clone(topics.entry(topic.to_string()).or_default()),
        }
    }

    pub fn record_produce(&self, topic: &str, bytes: u64, records: u64) {
        let counters = self.topic(topic);
        counters.bytes_in.fetch_add(bytes, Ordering::Relaxed);
        counters.records_in.fetch_add(records, Ordering::Relaxed);
    }

    pub fn record_fetch(&self, topic: &str, bytes: u64) {
        self.topic(topic)
            .bytes_out
            .fetch_add(bytes, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of everything. `committed` holds the
    /// committed offsets of the groups this broker coordinates.
    pub fn render(
        &self,
        controller: &ControllerClient,
        replicas: &ReplicaManager,
        committed: &[CommittedOffset],
    ) -> String {
        let mut out = String::new();
        out.push_str("# TYPE strata_request_latency_seconds histogram\n");
        for (api_key, histogram) in self.requests.lock().expect("metrics lock").iter() {
            let api = ApiKey::try_from(*api_key)
                .map_or_else(|()| api_key.to_string(), |api_key| format!("{api_key:?}"));
            for (bucket, bound) in histogram.buckets.iter().zip(LATENCY_BUCKETS_US) {
                let _ = writeln!(
                    out,
                    "strata_request_latency_seconds_bucket{{api=\"{api}\",le=\"{}\"}} {}",
                    bound as f64 / 1e6,
                    bucket.load(Ordering::Relaxed)
                );
            }
            let count = histogram.count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "strata_request_latency_seconds_bucket{{api=\"{api}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "strata_request_latency_seconds_count{{api=\"{api}\"}} {count}"
            );
            let sum = histogram.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(
                out,
                "strata_request_latency_seconds_sum{{api=\"{api}\"}} {sum}"
            );
        }
        let topics = self.topics.lock().expect("metrics lock");
        for (name, help, read) in [
            (
                "strata_topic_bytes_in_total",
                "counter",
                (|c: &TopicCounters| c.bytes_in.load(Ordering::Relaxed))
                    as fn(&TopicCounters) -> u64,
            ),
            (
                "strata_topic_records_in_total",
                "counter",
                |c: &TopicCounters| c.records_in.load(Ordering::Relaxed),
            ),
            (
                "strata_topic_bytes_out_total",
                "counter",
                |c: &TopicCounters| c.bytes_out.load(Ordering::Relaxed),
            ),
        ] {
            let _ = writeln!(out, "# TYPE {name} {help}");
            for (topic, counters) in topics.iter() {
                let _ = writeln!(out, "{name}{{topic=\"{topic}\"}} {}", read(counters));
            }
        }
        // The quorum as its leader last reported it (-1 before it has).
        let quorum = controller.quorum();
        let (term, leader, applied) = quorum.map_or((-1, -1, -1), |quorum| {
            (
                quorum.term as i64,
                quorum.leader as i64,
                quorum.applied_end as i64,
            )
        });
        let metadata = controller.metadata();
        let fenced = metadata
            .brokers
            .values()
            .filter(|broker| broker.fenced)
            .count();
        let session_alive = *controller.session().borrow() as u8;
        let _ = write!(
            out,
            "# TYPE strata_raft_term gauge\nstrata_raft_term {term}\n\
             # TYPE strata_raft_leader gauge\nstrata_raft_leader {leader}\n\
             # TYPE strata_raft_applied_index gauge\nstrata_raft_applied_index {applied}\n\
             # TYPE strata_metadata_version gauge\nstrata_metadata_version {}\n\
             # TYPE strata_brokers_fenced gauge\nstrata_brokers_fenced {fenced}\n\
             # TYPE strata_controller_session_alive gauge\nstrata_controller_session_alive {session_alive}\n",
            metadata.metadata_version
        );
        let partitions = replicas.all();
        let leading = partitions
            .iter()
            .filter(|partition| partition.leader_epoch().is_some())
            .count();
        let _ = writeln!(
            out,
            "# TYPE strata_partitions gauge\nstrata_partitions {}\n\
             # TYPE strata_partitions_leading gauge\nstrata_partitions_leading {leading}",
            partitions.len()
        );
        // Partitions this broker leads whose ISR lacks some replica.
        let under_replicated = partitions
            .iter()
            .filter(|partition| partition.leader_epoch().is_some())
            .filter_map(|partition| {
                let topic = metadata.topics.get(&partition.topic)?;
                topic.partitions.get(partition.index as usize)
            })
            .filter(|assignment| assignment.isr.len() < assignment.replicas.len())
            .count();
        let _ = writeln!(
            out,
            "# TYPE strata_under_replicated_partitions gauge\nstrata_under_replicated_partitions {under_replicated}\n\
             # TYPE strata_isr_shrinks_total counter\nstrata_isr_shrinks_total {}\n\
             # TYPE strata_isr_expands_total counter\nstrata_isr_expands_total {}\n\
             # TYPE strata_unclean_leader_elections_total counter\nstrata_unclean_leader_elections_total {}",
            self.isr_shrinks.load(Ordering::Relaxed),
            self.isr_expands.load(Ordering::Relaxed),
            self.unclean_elections.load(Ordering::Relaxed)
        );
        // Per partition led here: offsets the furthest-behind follower trails.
        out.push_str("# TYPE strata_follower_lag_records gauge\n");
        for partition in &partitions {
            if let Some(lag) = partition.follower_lag() {
                let _ = writeln!(
                    out,
                    "strata_follower_lag_records{{topic=\"{}\",partition=\"{}\"}} {lag}",
                    partition.topic, partition.index
                );
            }
        }
        // What consumers can read of each partition led here.
        out.push_str("# TYPE strata_partition_high_watermark gauge\n");
        for partition in partitions
            .iter()
            .filter(|partition| partition.leader_epoch().is_some())
        {
            let _ = writeln!(
                out,
                "strata_partition_high_watermark{{topic=\"{}\",partition=\"{}\"}} {}",
                partition.topic,
                partition.index,
                partition.high_watermark()
            );
        }
        // Per group this broker coordinates: the committed offset of each
        // partition, and the lag where a replica here knows the high
        // watermark (elsewhere, join with strata_partition_high_watermark).
        out.push_str("# TYPE strata_consumer_group_committed_offset gauge\n");
        for committed in committed {
            let _ = writeln!(
                out,
                "strata_consumer_group_committed_offset{{group=\"{}\",topic=\"{}\",partition=\"{}\"}} {}",
                escape(&committed.group),
                committed.topic,
                committed.partition,
                committed.offset
            );
        }
        out.push_str("# TYPE strata_consumer_group_lag_records gauge\n");
        for committed in committed {
            let Some(partition) = replicas.partition(&committed.topic, committed.partition) else {
                continue;
            };
            let lag = (partition.high_watermark() - committed.offset).max(0);
            let _ = writeln!(
                out,
                "strata_consumer_group_lag_records{{group=\"{}\",topic=\"{}\",partition=\"{}\"}} {lag}",
                escape(&committed.group),
                committed.topic,
                committed.partition
            );
        }
        out
    }
}

/// A group's committed offset of one partition, for `render`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// A label value as the text format wants it (group ids are free text;
/// topic names are restricted to `[a-zA-Z0-9._-]`).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Serves `GET /metrics` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    controller: ControllerClient,
    replicas: Arc<ReplicaManager>,
    groups: Arc<GroupCoordinator>,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((mut stream, _)) = accepted else {
            continue;
        };
        let (metrics, controller, replicas, groups) = (
            Arc::clone(&metrics),
            controller.clone(),
            Arc::clone(&replicas),
            Arc::clone(&groups),
        );
        // Rendered for a complete GET /metrics only, off the accept loop.
        tokio::spawn(async move {
            let read = tokio::time::timeout(Duration::from_secs(5), read_head(&mut stream)).await;
            let Ok(Ok(request)) = read else { return };
            let request = String::from_utf8_lossy(&request);
            let response = if request.starts_with("GET /metrics ") {
                let committed = groups.committed_offsets().await;
                let body = metrics.render(&controller, &replicas, &committed);
                format!("HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len())
            } else {
                "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    .to_string()
            };
            if let Err(error) = stream.write_all(response.as_bytes()).await {
                debug!(%error, "metrics response not sent");
            }
        });
    }
}

/// Reads an HTTP request head: up to the blank line that ends it, the peer
/// closing, or `HTTP_REQUEST_BYTES_MAX`. A client may send the request line
/// in several writes; answering after the first would cut it off.
async fn read_head(stream: &mut tokio::net::TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|window| window == b"\r\n\r\n")
        && head.len() < HTTP_REQUEST_BYTES_MAX
    {
        let len = stream.read(&mut chunk).await?;
        if len == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..len]);
    }
    Ok(head)
}
