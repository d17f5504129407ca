//! `logbench` runs end to end against a real `logd` and reports what it
//! measured in the documented JSON shape.

use std::process::Command;

use strata_tests::Logd;

fn logbench(logd: &Logd, args: &[&str]) -> serde_json::Value {
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
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|error| panic!("not JSON ({error}): {stdout}"))
}

fn check_shape(report: &serde_json::Value, messages: u64, bytes_each: u64) {
    assert_eq!(report["messages"], messages, "{report}");
    assert_eq!(report["bytes"], messages * bytes_each, "{report}");
    let seconds = report["seconds"].as_f64().unwrap();
    assert!(seconds > 0.0, "{report}");
    let rate = report["msgs_per_sec"].as_f64().unwrap();
    assert!((rate - messages as f64 / seconds).abs() < 1.0, "{report}");
    let latency = &report["latency_us"];
    let (p50, p99, p999, max) = (
        latency["p50"].as_u64().unwrap(),
        latency["p99"].as_u64().unwrap(),
        latency["p999"].as_u64().unwrap(),
        latency["max"].as_u64().unwrap(),
    );
    assert!(
        0 < p50 && p50 <= p99 && p99 <= p999 && p999 <= max,
        "{report}"
    );
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

    let e2e = logbench(
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
}
