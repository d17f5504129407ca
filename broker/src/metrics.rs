//! The metrics registry: counters and histograms the request path records
//! into. It imports nothing of the broker; `server::scrape` serves it with
//! the gauges it reads from the controller, the replicas and the groups.
//!
//! Counters and histograms are atomics behind maps that only grow by one key
//! per API or topic, so recording is a lookup and an atomic add.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::messages::ApiKey;

/// Upper bounds of the request latency buckets, in microseconds.
const LATENCY_BUCKETS_US: [u64; 12] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 500_000, 1_000_000,
];

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

    /// Appends the Prometheus text exposition of the recorded counters and
    /// histograms to `out`.
    pub fn render_into(&self, out: &mut String) {
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
        let _ = writeln!(
            out,
            "# TYPE strata_isr_shrinks_total counter\nstrata_isr_shrinks_total {}\n\
             # TYPE strata_isr_expands_total counter\nstrata_isr_expands_total {}\n\
             # TYPE strata_unclean_leader_elections_total counter\nstrata_unclean_leader_elections_total {}",
            self.isr_shrinks.load(Ordering::Relaxed),
            self.isr_expands.load(Ordering::Relaxed),
            self.unclean_elections.load(Ordering::Relaxed)
        );
    }
}

/// A label value as the text format wants it (group ids are free text;
/// topic names are restricted to `[a-zA-Z0-9._-]`).
pub fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
