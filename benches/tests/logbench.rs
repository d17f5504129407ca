//! `logbench` runs end to end against a real `logd` and reports what it
//! measured in the documented JSON shape.

use std::process::Command;

use strata_tests::Logd;

fn logbench(logd: &Logd, args: &[&str]) -> serde_json::Value {
    logbench_with_stderr(logd, args).0
}

/// The report, and what logbench wrote on stderr (not a terminal here).
fn logbench_with_stderr(logd: &Logd, args: &[&str]) -> (serde_json::Value, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_logbench"))
        .arg("--bootstrap-server")
        .arg(logd.bootstrap())
        .args(args)
        .arg("--json")
        .output()
        .expect("run logbench");
    assert!(
        output.status.success(),
        "logbench {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let report = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|error| panic!("not JSON ({error}): {stdout}"));
    (report, String::from_utf8_lossy(&output.stderr).into_owned())
}

fn check_shape(report: &serde_json::Value, messages: u64, bytes_each: u64) {
    assert_eq!(report["messages"], messages, "{report}");
    assert_eq!(report["bytes"], messages * bytes_each, "{report}");
    let seconds = report["seconds"].as_f64().unwrap();
    assert!(seconds > 0.0, "{report}");
    let rate = report["msgs_per_sec"].as_f64().unwrap();
    assert!((rate - messages as f64 / seconds).abs() < 1.0, "{report}");
    let latency = &report["latency_us"];
    let table: Vec<u64> = ["p50", "p75", "p90", "p95", "p99", "p999", "p9999", "max"]
        .iter()
        .map(|key| {
            latency[key]
                .as_u64()
                .unwrap_or_else(|| panic!("no {key}: {report}"))
        })
        .collect();
    assert!(table[0] > 0, "{report}");
    assert!(table.windows(2).all(|pair| pair[0] <= pair[1]), "{report}");
}

#[test]
fn logbench_produces_consumes_and_measures_end_to_end() {
    let logd = Logd::start();
    let produced = logbench(
        &logd,
        &[
            "produce", "--topic", "load", "--create", "-p", "2", "-n", "20000", "-s", "100",
            "--acks", "all",
        ],
    );
    check_shape(&produced, 20_000, 100);

    let consumed = logbench(&logd, &["consume", "--topic", "load", "--consumers", "2"]);
    check_shape(&consumed, 20_000, 100);

    // Right after an acks=1 run the last records may still be below the
    // high watermark (it follows the flush); consume waits for them.
    let histogram = tempfile::NamedTempFile::new().unwrap();
    let produced = logbench(
        &logd,
        &[
            "produce",
            "--topic",
            "quick",
            "--create",
            "-n",
            "50000",
            "-s",
            "100",
            "--acks",
            "1",
            "--histogram",
            histogram.path().to_str().unwrap(),
        ],
    );
    check_shape(&produced, 50_000, 100);
    let consumed = logbench(&logd, &["consume", "--topic", "quick", "-n", "50000"]);
    check_shape(&consumed, 50_000, 100);
    let distribution = std::fs::read_to_string(histogram.path()).unwrap();
    assert!(
        distribution.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)"),
        "{distribution}"
    );
    assert!(
        distribution.contains("Total count    =        50000]"),
        "every send's latency is in the distribution:\n{distribution}"
    );

    let (e2e, progress) = logbench_with_stderr(
        &logd,
        &[
            "e2e",
            "--topic",
            "latency",
            "--create",
            "--rate",
            "2000",
            "--seconds",
            "2",
            "-s",
            "64",
        ],
    );
    check_shape(&e2e, 4_000, 64);
    assert!(
        e2e["seconds"].as_f64().unwrap() >= 1.9,
        "a fixed rate of 2000/s for 4000 messages takes two seconds: {e2e}"
    );
    assert!(
        progress.lines().any(|line| line.contains("/4000 msgs")),
        "a progress line each second when stderr is not a terminal:\n{progress}"
    );
}

#[test]
fn logbench_produces_in_transactions_and_reads_them_read_committed() {
    let logd = Logd::start();
    let produced = logbench(
        &logd,
        &[
            "produce",
            "--topic",
            "ledger",
            "--create",
            "-p",
            "3",
            "-n",
            "30000",
            "-s",
            "100",
            "--acks",
            "all",
            "--transactional",
            "--txn-ms",
            "20",
        ],
    );
    check_shape(&produced, 30_000, 100);
    let committed = produced["transactions"]["committed"].as_u64().unwrap();
    assert!(committed >= 1, "{produced}");
    assert!(
        produced["transactions"]["commit_latency_us"]["p99"]
            .as_u64()
            .unwrap()
            > 0,
        "{produced}"
    );
    // Each partition holds a commit marker per transaction that wrote to
    // it: the run reads to each partition's end and counts only records.
    for isolation in ["read_committed", "read_uncommitted"] {
        let consumed = logbench(
            &logd,
            &[
                "consume",
                "--topic",
                "ledger",
                "--consumers",
                "2",
                "--isolation",
                isolation,
            ],
        );
        check_shape(&consumed, 30_000, 100);
    }
    let output = Command::new(env!("CARGO_BIN_EXE_logbench"))
        .args(["produce", "--topic", "ledger", "--txn-ms", "20"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--transactional"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
