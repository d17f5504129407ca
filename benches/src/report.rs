//! What a run measured, printed as text or as one JSON object.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

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
    /// With transactions: how long each commit took (flushing what the
    /// transaction still held, then EndTxn).
    pub commits: Option<Histogram<u64>>,
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
        let table: Vec<(&str, &str, u64)> = PERCENTILES
            .iter()
            .map(|&(name, key, quantile)| (name, key, latency.value_at_quantile(quantile)))
            .chain([("max", "max", max)])
            .collect();
        if json {
            let mut report = json!({
                "messages": self.messages,
                "bytes": self.bytes,
                "seconds": seconds,
                "msgs_per_sec": msgs_per_sec,
                "mb_per_sec": mb_per_sec,
                "latency_us": table.iter().map(|&(_, key, value)| (key.to_string(), json!(value))).collect::<serde_json::Map<_, _>>(),
                "latency_count": latency.len(),
                "latency_mean_us": latency.mean(),
                "peak_rss_bytes": peak_rss_bytes(),
            });
            if let Some(commits) = &self.commits {
                report["transactions"] = json!({
                    "committed": commits.len(),
                    "commit_latency_us": {
                        "p50": commits.value_at_quantile(0.50),
                        "p99": commits.value_at_quantile(0.99),
                        "max": commits.max(),
                    },
                });
            }
            writeln!(out, "{report}")?;
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
            writeln!(out, "{:>10}  {:>12}", "percentile", "latency µs")?;
            for (name, _, value) in &table {
                writeln!(out, "{name:>10}  {value:>12}")?;
            }
            if let Some(commits) = &self.commits {
                writeln!(
                    out,
                    "transactions: {} committed, commit latency p50 {} µs, p99 {} µs, max {} µs",
                    commits.len(),
                    commits.value_at_quantile(0.50),
                    commits.value_at_quantile(0.99),
                    commits.max()
                )?;
            }
            if let Some(rss) = peak_rss_bytes() {
                writeln!(out, "peak RSS of logbench: {:.1} MB", rss as f64 / 1e6)?;
            }
        }
        Ok(())
    }
}

/// The percentiles of the latency table: name, JSON key, quantile.
const PERCENTILES: &[(&str, &str, f64)] = &[
    ("p50", "p50", 0.50),
    ("p75", "p75", 0.75),
    ("p90", "p90", 0.90),
    ("p95", "p95", 0.95),
    ("p99", "p99", 0.99),
    ("p99.9", "p999", 0.999),
    ("p99.99", "p9999", 0.9999),
];

impl Report {
    /// Writes the latency distribution in HdrHistogram's percentile format
    /// (what `HistogramLogProcessor` prints and the plotter at
    /// hdrhistogram.github.io reads), in milliseconds.
    pub fn write_histogram(&self, path: &std::path::Path) -> std::io::Result<()> {
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        write_percentiles(&mut out, &self.latency)?;
        std::io::Write::flush(&mut out)
    }
}

fn write_percentiles(
    out: &mut impl std::io::Write,
    latency: &Histogram<u64>,
) -> std::io::Result<()> {
    const MS_PER_US: f64 = 1e-3;
    writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    )?;
    for step in latency.iter_quantiles(5) {
        let quantile = step.quantile_iterated_to();
        let value = step.value_iterated_to() as f64 * MS_PER_US;
        let total = latency.count_between(0, step.value_iterated_to());
        if quantile < 1.0 {
            writeln!(
                out,
                "{value:>12.3} {quantile:>2.12} {total:>10} {:>14.2}",
                1.0 / (1.0 - quantile)
            )?;
        } else {
            writeln!(out, "{value:>12.3} {quantile:>2.12} {total:>10}")?;
        }
    }
    writeln!(
        out,
        "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]",
        latency.mean() * MS_PER_US,
        latency.stdev() * MS_PER_US
    )?;
    writeln!(
        out,
        "#[Max     = {:>12.3}, Total count    = {:>12}]",
        latency.max() as f64 * MS_PER_US,
        latency.len()
    )?;
    writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        latency.buckets(),
        (2 * 10u64.pow(latency.sigfig() as u32)).next_power_of_two()
    )
}

/// The process's peak resident set (VmHWM), where /proc tells it.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A progress bar on a terminal; when stderr is not one (a log, CI), a
/// line per second instead, until the bar is finished.
pub fn progress(total: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} msgs {per_sec} eta {eta}")
            .expect("valid template"),
    );
    if !std::io::stderr().is_terminal() {
        let bar = bar.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut ticks = tokio::time::interval(Duration::from_secs(1));
            ticks.tick().await;
            let mut last = 0;
            loop {
                ticks.tick().await;
                if bar.is_finished() {
                    return;
                }
                let position = bar.position();
                eprintln!(
                    "{:>5.0} s  {position}/{} msgs  {} msgs/s",
                    started.elapsed().as_secs_f64(),
                    bar.length().unwrap_or_default(),
                    position.saturating_sub(last)
                );
                last = position;
            }
        });
    }
    bar
}
