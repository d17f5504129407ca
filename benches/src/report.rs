//! What a run measured, printed as text or as one JSON object.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::json;

/// Latencies are recorded in microseconds, 1 µs to 10 minutes, 3 digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

pub fn record(histogram: &mut Histogram<u64>, latency: Duration) {
    histogram.saturating_record((latency.as_micros() as u64).max(1));
}

pub struct Report {
    pub name: &'static str,
    pub messages: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    pub latency: Histogram<u64>,
    /// What the latency measures, for the text output.
    pub latency_of: &'static str,
}

impl Report {
    /// Prints the report on stdout; a closed stdout (`| head`) is not an error.
    pub fn print(&self, json: bool) {
        let _ = self.write(&mut std::io::stdout().lock(), json);
    }

    fn write(&self, out: &mut impl std::io::Write, json: bool) -> std::io::Result<()> {
        let seconds = self.elapsed.as_secs_f64();
        let msgs_per_sec = self.messages as f64 / seconds;
        let mb_per_sec = self.bytes as f64 / seconds / 1e6;
        let latency = &self.latency;
        let (p50, p99, p999, max) = (
            latency.value_at_quantile(0.50),
            latency.value_at_quantile(0.99),
            latency.value_at_quantile(0.999),
            latency.max(),
        );
        if json {
            writeln!(
                out,
                "{}",
                json!({
                    "messages": self.messages,
                    "bytes": self.bytes,
                    "seconds": seconds,
                    "msgs_per_sec": msgs_per_sec,
                    "mb_per_sec": mb_per_sec,
                    "latency_us": {"p50": p50, "p99": p99, "p999": p999, "max": max},
                    "peak_rss_bytes": peak_rss_bytes(),
                })
            )?;
        } else {
            writeln!(
                out,
                "{}: {} messages, {:.1} MB in {seconds:.2} s: {msgs_per_sec:.0} msgs/s, {mb_per_sec:.1} MB/s",
                self.name,
                self.messages,
                self.bytes as f64 / 1e6,
            )?;
            writeln!(
                out,
                "latency ({}): p50 {p50} µs, p99 {p99} µs, p99.9 {p999} µs, max {max} µs",
                self.latency_of
            )?;
            if let Some(rss) = peak_rss_bytes() {
                writeln!(out, "peak RSS of logbench: {:.1} MB", rss as f64 / 1e6)?;
            }
        }
        Ok(())
    }
}

/// The process's peak resident set (VmHWM), where /proc tells it.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A progress bar on a terminal; hidden when stderr is not one.
pub fn progress(total: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} msgs {per_sec} eta {eta}")
            .expect("valid template"),
    );
    bar
}
