//! Every `logctl` verb against a real `logd`, in table and JSON output, and
//! the errors a user sees for unknown topics, a dead broker and bad flags.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use strata_tests::Logd;

struct Logctl {
    bootstrap: String,
}

impl Logctl {
    fn run_with_input(&self, args: &[&str], input: &str) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_logctl"))
            .arg("--bootstrap-server")
            .arg(&self.bootstrap)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start logctl");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().expect("logctl output")
    }

    /// Runs `args`, expecting success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        self.ok_with_input(args, "")
    }

    fn ok_with_input(&self, args: &[&str], input: &str) -> String {
        let output = self.run_with_input(args, input);
        assert!(
            output.status.success(),
            "logctl {args:?} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// Runs `args`, expecting failure; returns (exit code, stderr).
    fn fails(&self, args: &[&str]) -> (i32, String) {
        let output = self.run_with_input(args, "");
        assert!(!output.status.success(), "logctl {args:?} should fail");
        assert!(output.stdout.is_empty(), "nothing on stdout when failing");
        (
            output.status.code().unwrap(),
            String::from_utf8(output.stderr).unwrap(),
        )
    }
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|error| panic!("not JSON ({error}): {text}"))
}

#[test]
fn every_logctl_verb_in_table_and_json() {
    let logd = Logd::start();
    let logctl = Logctl {
        bootstrap: logd.bootstrap(),
    };

    // topic create
    let out = logctl.ok(&[
        "topic",
        "create",
        "events",
        "-p",
        "3",
        "-c",
        "retention.ms=60000",
    ]);
    assert_eq!(out, "created topic events with 3 partitions\n");
    let out = logctl.ok(&[
        "topic",
        "create",
        "events",
        "--if-not-exists",
        "--format",
        "json",
    ]);
    assert_eq!(
        json(&out),
        serde_json::json!({"topic": "events", "created": false})
    );
    let out = logctl.ok(&["--format", "json", "topic", "create", "audit"]);
    assert_eq!(
        json(&out),
        serde_json::json!({"topic": "audit", "created": true})
    );
    let (_, error) = logctl.fails(&["topic", "create", "events"]);
    assert!(error.contains("already exists"), "{error}");

    // topic list
    let out = logctl.ok(&["topic", "list"]);
    assert_eq!(
        out.lines()
            .map(|line| line.split_whitespace().collect::<Vec<_>>())
            .collect::<Vec<_>>(),
        [
            vec!["TOPIC", "PARTITIONS", "REPLICAS"],
            vec!["audit", "1", "1"],
            vec!["events", "3", "1"]
        ]
    );
    let out = logctl.ok(&["topic", "list", "--format", "json"]);
    assert_eq!(json(&out)[1]["name"], "events");
    assert_eq!(json(&out)[1]["partitions"], 3);

    // produce: keys route, the summary counts per partition (compressed
    // batches read back like any other)
    let lines: String = (0..300)
        .map(|index| format!("user-{}:event-{index}\n", index % 10))
        .collect();
    let out = logctl.ok_with_input(
        &[
            "produce",
            "events",
            "--key-separator",
            ":",
            "--acks",
            "all",
            "--compression",
            "zstd",
        ],
        &lines,
    );
    assert!(out.starts_with("produced 300 records"), "{out}");

    // producer list: the produce above was idempotent (acks=all); each
    // partition remembers its producer and the last sequence it wrote.
    let out = logctl.ok(&["producer", "list", "events", "--format", "json"]);
    let producers = json(&out);
    let producers = producers.as_array().expect("a list");
    assert!(!producers.is_empty(), "{out}");
    let records: i64 = producers
        .iter()
        .map(|producer| producer["last_sequence"].as_i64().unwrap() + 1)
        .sum();
    assert_eq!(records, 300, "sequences count every record: {out}");
    assert!(
        producers
            .iter()
            .all(|producer| producer["producer_id"] == producers[0]["producer_id"]),
        "one producer: {out}"
    );
    let out = logctl.ok(&["producer", "list", "events"]);
    assert!(out.starts_with("PARTITION"), "{out}");
    let (_, error) = logctl.fails(&["producer", "list", "nowhere"]);
    assert!(error.contains("nowhere"), "{error}");
    let (_, error) = logctl.fails(&["produce", "events", "--acks", "1", "--idempotent"]);
    assert!(error.contains("idempotence needs acks=all"), "{error}");
    let out = logctl.ok_with_input(
        &[
            "produce", "audit", "-p", "0", "--acks", "1", "--format", "json",
        ],
        "a\nb\nc\n",
    );
    let summary = json(&out);
    assert_eq!(summary["records"], 3);
    assert_eq!(summary["partitions"][0]["first_offset"], 0);
    assert_eq!(summary["partitions"][0]["last_offset"], 2);

    // consume: values per line; JSON objects per line
    let out = logctl.ok(&["consume", "audit", "-n", "3"]);
    assert_eq!(out, "a\nb\nc\n");
    let out = logctl.ok(&["consume", "audit", "-o", "1", "-n", "2", "--format", "json"]);
    let records: Vec<serde_json::Value> = out.lines().map(json).collect();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["offset"], 1);
    assert_eq!(records[0]["value"], "b");
    assert_eq!(records[0]["key"], serde_json::Value::Null);
    assert!(records[0]["timestamp"].as_i64().unwrap() > 1_600_000_000_000);
    let out = logctl.ok(&[
        "consume",
        "events",
        "--timeout-ms",
        "1000",
        "--format",
        "json",
    ]);
    let records: Vec<serde_json::Value> = out.lines().map(json).collect();
    assert_eq!(records.len(), 300);
    for record in &records {
        let key = record["key"].as_str().unwrap();
        let expected = strata_client::partitioner::partition_for_key(key.as_bytes(), 3);
        assert_eq!(record["partition"], expected, "{record}");
    }
    let out = logctl.ok(&["consume", "audit", "-o", "end", "--timeout-ms", "200"]);
    assert_eq!(out, "", "nothing after the end");
    let out = logctl.ok(&[
        "consume",
        "audit",
        "-o",
        &format!("@{}", strata_tests::now_ms() + 60_000),
        "--timeout-ms",
        "200",
    ]);
    assert_eq!(out, "", "nothing after a future time");

    // topic describe
    let out = logctl.ok(&["topic", "describe", "events"]);
    assert!(out.contains("configs: retention.ms=60000"), "{out}");
    assert!(out.contains("HIGH-WATERMARK"), "{out}");
    let described = json(&logctl.ok(&["topic", "describe", "events", "--format", "json"]));
    let total: i64 = (0..3)
        .map(|partition| {
            described["partitions"][partition]["high_watermark"]
                .as_i64()
                .unwrap()
        })
        .sum();
    assert_eq!(total, 300);
    assert_eq!(described["partitions"][0]["leader"], 1);
    assert_eq!(described["partitions"][0]["isr"], serde_json::json!([1]));

    // topic alter
    let out = logctl.ok(&[
        "topic",
        "alter",
        "events",
        "--partitions",
        "4",
        "-c",
        "segment.bytes=1048576",
        "--delete-config",
        "retention.ms",
    ]);
    assert_eq!(out, "altered topic events\n");
    let described = json(&logctl.ok(&["topic", "describe", "events", "--format", "json"]));
    assert_eq!(described["partitions"].as_array().unwrap().len(), 4);
    assert_eq!(
        described["configs"],
        serde_json::json!({"segment.bytes": "1048576"})
    );
    let out = logctl.ok(&[
        "topic",
        "alter",
        "events",
        "-c",
        "flush.ms=500",
        "--format",
        "json",
    ]);
    assert_eq!(json(&out)["altered"], true);
    let (_, error) = logctl.fails(&["topic", "alter", "events", "-c", "retention.ms=soon"]);
    assert!(error.contains("retention.ms"), "{error}");

    // cluster info
    let out = logctl.ok(&["cluster", "info"]);
    assert!(
        out.contains(&format!("1       {}  alive", logd.bootstrap())),
        "{out}"
    );
    assert!(out.contains("controller: broker 1"), "{out}");
    assert!(out.contains("metadata quorum: leader 1, term "), "{out}");
    let cluster = json(&logctl.ok(&["cluster", "info", "--format", "json"]));
    assert_eq!(cluster["controller_id"], 1);
    let quorum = &cluster["quorum"];
    assert_eq!(quorum["leader_id"], 1, "{quorum}");
    assert!(quorum["term"].as_i64().unwrap() >= 1, "{quorum}");
    // Registration and three topic changes at least went through the log.
    let metadata_offset = quorum["metadata_offset"].as_i64().unwrap();
    assert!(metadata_offset >= 4, "{quorum}");
    assert_eq!(quorum["voters"][0]["id"], 1, "{quorum}");
    assert!(
        quorum["voters"][0]["log_end_offset"].as_i64().unwrap() >= metadata_offset,
        "{quorum}"
    );
    assert_eq!(cluster["brokers"][0]["port"], logd.address.port());
    assert_eq!(cluster["brokers"][0]["state"], "alive");

    // topic delete
    assert_eq!(
        logctl.ok(&["topic", "delete", "audit"]),
        "deleted topic audit\n"
    );
    assert_eq!(
        json(&logctl.ok(&["topic", "delete", "events", "--format", "json"]))["deleted"],
        true
    );

    // errors: one sentence, non-zero exit
    let (code, error) = logctl.fails(&["topic", "describe", "audit"]);
    assert_eq!(code, 1);
    assert_eq!(
        error,
        "logctl: topic 'audit' does not exist; `logctl topic list` shows the topics there are.\n"
    );
    let (_, error) = logctl.fails(&["consume", "audit"]);
    assert!(error.contains("topic 'audit' does not exist"), "{error}");
    let (_, error) = logctl.fails(&["produce", "audit"]);
    assert!(error.contains("topic 'audit' does not exist"), "{error}");
    let (code, error) = logctl.fails(&["topic", "frobnicate"]);
    assert_eq!(code, 2);
    assert!(
        error.contains("unrecognized subcommand 'frobnicate'"),
        "{error}"
    );
    let (code, error) = logctl.fails(&["produce", "x", "--compression", "brotli"]);
    assert_eq!(code, 2);
    assert!(
        error.contains("unknown compression \"brotli\": use none, gzip, snappy, lz4 or zstd"),
        "{error}"
    );
    let (_, error) = logctl.fails(&["consume", "x", "-o", "yesterday"]);
    assert!(
        error.contains("'yesterday' is not start, end, an offset, -N or @UNIX_MS"),
        "{error}"
    );
    let dead = Logctl {
        bootstrap: format!("127.0.0.1:{}", strata_tests::free_port()),
    };
    let (code, error) = dead.fails(&["topic", "list"]);
    assert_eq!(code, 1);
    assert!(
        error.starts_with("logctl: cannot reach a broker at 127.0.0.1:"),
        "{error}"
    );
    assert!(error.contains("is logd running there?"), "{error}");
    assert_eq!(error.lines().count(), 1, "{error}");

    // completions
    let out = logctl.ok(&["completions", "bash"]);
    assert!(out.contains("_logctl()"), "{out}");
}

/// Per partition of a `group describe --format json`: (committed, log end,
/// lag).
fn group_partitions(described: &serde_json::Value) -> Vec<(i64, i64, i64)> {
    described["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|partition| {
            (
                partition["committed_offset"].as_i64().unwrap_or(-1),
                partition["log_end_offset"].as_i64().unwrap(),
                // No committed offset: no lag to tell.
                partition["lag"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

/// `logctl consume orders -g billing -n COUNT`.
fn consume_billing(logctl: &Logctl, count: usize) -> String {
    let count = count.to_string();
    logctl.ok(&[
        "consume",
        "orders",
        "-g",
        "billing",
        "-n",
        &count,
        "--timeout-ms",
        "10000",
    ])
}

#[test]
fn logctl_consumes_in_a_group_and_lists_describes_resets_and_deletes_groups() {
    let logd = Logd::start();
    let logctl = Logctl {
        bootstrap: logd.bootstrap(),
    };
    logctl.ok(&["topic", "create", "orders", "-p", "3"]);
    let lines: String = (0..10).map(|index| format!("order-{index}\n")).collect();
    for partition in ["0", "1", "2"] {
        logctl.ok_with_input(&["produce", "orders", "-p", partition], &lines);
    }

    // A group consumer prints 12 records and commits exactly those.
    let out = consume_billing(&logctl, 12);
    assert_eq!(out.lines().count(), 12, "{out}");
    let listed = logctl.ok(&["group", "list"]);
    assert!(
        listed.contains("billing") && listed.contains("Empty"),
        "{listed}"
    );
    let described = json(&logctl.ok(&["group", "describe", "billing", "--format", "json"]));
    assert_eq!(described["state"], "Empty");
    assert_eq!(
        group_partitions(&described),
        [(10, 10, 0), (2, 10, 8), (-1, 10, -1)],
        "12 committed in partition order; none yet for partition 2"
    );

    // A member reads the rest while more arrive, and shows in describe.
    let member = Command::new(env!("CARGO_BIN_EXE_logctl"))
        .args(["--bootstrap-server", &logctl.bootstrap])
        .args(["consume", "orders", "-g", "billing", "--timeout-ms", "3000"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start logctl consume");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let described = json(&logctl.ok(&["group", "describe", "billing", "--format", "json"]));
        let members = described["members"].as_array().unwrap();
        if described["state"] == "Stable" && members.len() == 1 {
            assert_eq!(
                members[0]["assignment"].as_array().unwrap().len(),
                3,
                "{described}"
            );
            assert_eq!(members[0]["client_id"], "logctl");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no stable member: {described}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    logctl.ok_with_input(&["produce", "orders", "-p", "1"], "late-1\nlate-2\n");
    let output = member.wait_with_output().expect("member output");
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).lines().count(),
        20,
        "18 left and 2 late ones"
    );
    let described = json(&logctl.ok(&["group", "describe", "billing", "--format", "json"]));
    assert!(
        group_partitions(&described)
            .iter()
            .all(|&(committed, end, lag)| committed == end && lag == 0),
        "{described}"
    );

    // Lag grows with what is produced while nobody reads.
    logctl.ok_with_input(&["produce", "orders", "-p", "2"], "a\nb\nc\n");
    let table = logctl.ok(&["group", "describe", "billing"]);
    assert!(table.starts_with("group: billing  state: Empty"), "{table}");
    let row = table
        .lines()
        .find(|line| line.starts_with("orders  2"))
        .expect("partition 2");
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells[2..5],
        ["10", "13", "3"],
        "committed, log end, lag: {table}"
    );
    assert_eq!(
        logd.metric(
            r#"strata_consumer_group_lag_records{group="billing",topic="orders",partition="2"}"#
        ),
        Some(3.0),
        "the coordinator exports the same lag"
    );
    assert_eq!(
        logd.metric(r#"strata_partition_high_watermark{topic="orders",partition="2"}"#),
        Some(13.0)
    );

    // reset-offsets: a dry run changes nothing; --execute commits.
    let dry = logctl.ok(&[
        "group",
        "reset-offsets",
        "billing",
        "--topic",
        "orders",
        "--to-earliest",
    ]);
    assert!(dry.contains("dry run"), "{dry}");
    assert_eq!(
        group_partitions(&json(
            &logctl.ok(&["group", "describe", "billing", "--format", "json"])
        ))[2],
        (10, 13, 3)
    );
    logctl.ok(&[
        "group",
        "reset-offsets",
        "billing",
        "--topic",
        "orders",
        "--shift-by",
        "-4",
        "--execute",
    ]);
    let partitions = group_partitions(&json(
        &logctl.ok(&["group", "describe", "billing", "--format", "json"]),
    ));
    assert_eq!(partitions, [(6, 10, 4), (8, 12, 4), (6, 13, 7)]);
    let out = consume_billing(&logctl, 15);
    assert_eq!(
        out.lines().count(),
        15,
        "the group reads again from the reset offsets"
    );

    // Ctrl-C leaves the group at once, not a session later.
    let member = Command::new(env!("CARGO_BIN_EXE_logctl"))
        .args(["--bootstrap-server", &logctl.bootstrap])
        .args(["consume", "orders", "-g", "interrupted"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start logctl consume");
    let describe_interrupted = || {
        let output = logctl.run_with_input(
            &["group", "describe", "interrupted", "--format", "json"],
            "",
        );
        output
            .status
            .success()
            .then(|| json(&String::from_utf8_lossy(&output.stdout)))
    };
    strata_tests::wait_for(
        std::time::Duration::from_secs(20),
        "a stable member",
        || describe_interrupted().filter(|described| described["state"] == "Stable"),
    );
    let interrupted = Command::new("kill")
        .args(["-INT", &member.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let output = member.wait_with_output().expect("member output");
    assert!(output.status.success(), "{:?}", output.status);
    // Gone from the group at once (its session would keep it for 45 s).
    if let Some(described) = describe_interrupted() {
        assert_eq!(described["state"], "Empty", "left on Ctrl-C: {described}");
        assert_eq!(described["members"], serde_json::json!([]), "{described}");
    }

    // Mistakes get a sentence; delete removes the group.
    let (_, error) = logctl.fails(&["consume", "orders", "-g", "billing", "-p", "0"]);
    assert!(error.contains("-p and -g do not mix"), "{error}");
    let (_, error) = logctl.fails(&["consume", "orders", "-g", "billing", "-o", "5"]);
    assert!(error.contains("group reset-offsets"), "{error}");
    let (_, error) = logctl.fails(&["consume", "missing", "-g", "billing"]);
    assert!(error.contains("topic 'missing' does not exist"), "{error}");
    let (_, error) = logctl.fails(&["group", "reset-offsets", "billing", "--topic", "orders"]);
    assert!(error.contains("--to-earliest"), "{error}");
    assert_eq!(
        logctl.ok(&["group", "delete", "billing"]),
        "deleted group billing\n"
    );
    let (_, error) = logctl.fails(&["group", "describe", "billing"]);
    assert!(error.contains("group 'billing' does not exist"), "{error}");
}

#[test]
fn logctl_prints_like_kcat_takes_headers_and_the_last_n_and_stops_quietly_at_a_closed_pipe() {
    let logd = Logd::start();
    let logctl = Logctl {
        bootstrap: logd.bootstrap(),
    };
    logctl.ok(&["topic", "create", "audit", "-p", "1"]);
    let lines: String = (0..10).map(|i| format!("user-{i}:login-{i}\n")).collect();
    logctl.ok_with_input(
        &[
            "produce",
            "audit",
            "--key-separator",
            ":",
            "-H",
            "source=web",
            "-H",
            "v=2",
        ],
        &lines,
    );

    // kcat's -f fields, escapes and literal text.
    let out = logctl.ok(&[
        "consume",
        "audit",
        "-n",
        "1",
        "-f",
        "%t|%p|%o|%k|%v|%h|%K|%S%%\\n",
    ]);
    assert_eq!(out, "audit|0|0|user-0|login-0|source=web,v=2|6|7%\n");
    let record = json(&logctl.ok(&["consume", "audit", "-n", "1", "--format", "json"]));
    assert_eq!(record["headers"][0]["key"], "source", "{record}");
    assert_eq!(record["headers"][1]["value"], "2", "{record}");
    let (code, error) = logctl.fails(&["consume", "audit", "-f", "%q"]);
    assert_eq!(code, 1);
    assert!(error.contains("unknown field %q"), "{error}");

    // -o -N: the last N records.
    let out = logctl.ok(&["consume", "audit", "-o", "-3", "-n", "3", "-f", "%o %v\n"]);
    assert_eq!(out, "7 login-7\n8 login-8\n9 login-9\n");

    // delete-records: consumers start at the new log start.
    let out = logctl.ok(&[
        "topic",
        "delete-records",
        "audit",
        "--before",
        "4",
        "--format",
        "json",
    ]);
    assert_eq!(json(&out)[0]["log_start_offset"], 4, "{out}");
    let out = logctl.ok(&["consume", "audit", "-n", "1", "-f", "%o\n"]);
    assert_eq!(out, "4\n");
    let (_, error) = logctl.fails(&["topic", "delete-records", "audit", "--before", "999"]);
    assert!(error.contains("past the high watermark"), "{error}");

    // reassign: one broker here, so only its refusal and the empty list.
    let (_, error) = logctl.fails(&["topic", "reassign", "audit", "--replicas", "1,9"]);
    assert!(error.contains("broker 9 is not alive"), "{error}");
    assert_eq!(
        logctl.ok(&["topic", "reassign", "audit", "--replicas", "1", "--wait"]),
        "reassigned audit\n"
    );
    assert_eq!(
        logctl.ok(&["topic", "reassignments"]),
        "TOPIC  PARTITION  REPLICAS  ADDING  REMOVING\n"
    );

    // A host without a port is port 9092 (nothing listens on 127.0.0.2).
    let bare = Logctl {
        bootstrap: "127.0.0.2".to_string(),
    };
    let (_, error) = bare.fails(&["topic", "list"]);
    assert!(
        error.contains("cannot reach a broker at 127.0.0.2"),
        "{error}"
    );
    assert!(error.contains("Connection refused"), "{error}");

    // The broker's own explanation, once.
    let (_, error) = logctl.fails(&["topic", "create", "x", "-r", "0"]);
    assert_eq!(
        error,
        "logctl: create topic \"x\": replication factor 0 is invalid: a topic needs at least one replica\n"
    );
    let (_, error) = logctl.fails(&["group", "delete", "nobody"]);
    assert_eq!(
        error,
        "logctl: group 'nobody' does not exist; `logctl group list` shows the groups there are\n"
    );

    // A reader that goes away early (`| head -c 1`) ends logctl quietly:
    // 600 kB of output do not fit in the pipe.
    let many: String = (0..50_000).map(|i| format!("record-{i}\n")).collect();
    logctl.ok_with_input(&["produce", "audit"], &many);
    {
        let args = ["consume", "audit", "-n", "50010"];
        let mut child = Command::new(env!("CARGO_BIN_EXE_logctl"))
            .arg("--bootstrap-server")
            .arg(&logctl.bootstrap)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut first = [0u8; 1];
        std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
        drop(stdout);
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "logctl {args:?} with a closed stdout: {:?} {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// `topic reassign --throttle`: 16 MB copied to a new replica at 4 MB/s
/// cannot take much under 3 s (one second's worth may go at once); without
/// the throttle it takes a fraction of a second here. `--wait` removes the
/// throttle once the move is done, and the new replica holds everything
/// (`cluster log-dirs`). Then `cluster elect-leaders` gives leadership back
/// to the preferred replica after its restart.
#[test]
fn topic_reassign_throttles_the_copy_then_log_dirs_and_elect_leaders_show_and_restore() {
    use std::time::{Duration, Instant};
    let _serial = strata_tests::one_cluster_at_a_time();
    // Leadership returns to the preferred replica only when asked here.
    let mut cluster =
        strata_tests::Cluster::start_with_args(3, &["--auto-leader-rebalance", "false"]);
    let logctl = Logctl {
        bootstrap: cluster.bootstrap(),
    };
    logctl.ok(&["topic", "create", "bulky", "-p", "1", "-r", "1"]);
    let line = "x".repeat(1023);
    let input: String = (0..16_000).map(|_| format!("{line}\n")).collect();
    logctl.ok_with_input(&["produce", "bulky"], &input);
    let leader = cluster.leader_of("bulky", 0, Duration::from_secs(10));
    let other = (1..=3).find(|id| *id != leader).unwrap();
    let replicas = format!("{leader},{other}");
    let started = Instant::now();
    let out = logctl.ok(&[
        "topic",
        "reassign",
        "bulky",
        "--replicas",
        &replicas,
        "--throttle",
        "4MB",
        "--wait",
    ]);
    let elapsed = started.elapsed();
    assert_eq!(out, "reassigned bulky\n");
    assert!(
        elapsed >= Duration::from_millis(2_500),
        "16 MB at 4 MB/s took only {elapsed:?}"
    );
    println!("16 MB copied to a new replica at a 4 MB/s throttle in {elapsed:?}");
    let described = json(&logctl.ok(&["--format", "json", "topic", "describe", "bulky"]));
    assert_eq!(described["configs"], serde_json::json!({}), "{described}");
    assert_eq!(
        described["partitions"][0]["isr"].as_array().unwrap().len(),
        2
    );
    assert_eq!(described["partitions"][0]["high_watermark"], 16_000);
    let (_, error) = logctl.fails(&[
        "topic",
        "reassign",
        "bulky",
        "--replicas",
        "1",
        "--throttle",
        "fast",
    ]);
    assert!(error.contains("is not a rate"), "{error}");

    // cluster log-dirs: both replicas hold the same bytes.
    let dirs = json(&logctl.ok(&["--format", "json", "cluster", "log-dirs"]));
    let sizes: Vec<i64> = dirs
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|dir| {
            assert!(dir["usable_bytes"].as_i64().unwrap() > 0, "{dir}");
            dir["replicas"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|replica| replica["topic"] == "bulky")
                .map(|replica| replica["bytes"].as_i64().unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(sizes.len(), 2, "{dirs}");
    assert_eq!(sizes[0], sizes[1], "{dirs}");
    assert!(sizes[0] >= 16_000 * 1024, "{dirs}");
    let table = logctl.ok(&["cluster", "log-dirs"]);
    assert!(table.starts_with("BROKER  LOG-DIR"), "{table}");

    // cluster elect-leaders: the preferred replica leads already; after it
    // restarts, the other one leads until the election gives it back.
    let out = logctl.ok(&["cluster", "elect-leaders", "-t", "bulky"]);
    assert!(out.contains("already led by it"), "{out}");
    cluster.node(leader).kill9();
    strata_tests::wait_for(Duration::from_secs(30), "the other replica leading", || {
        let view = cluster.node(other).view()?;
        (view.partitions[&("bulky".to_string(), 0)].leader == other).then_some(())
    });
    cluster.node(leader).restart();
    strata_tests::wait_for(
        Duration::from_secs(30),
        "the preferred leader elected",
        || {
            let args = [
                "--format",
                "json",
                "cluster",
                "elect-leaders",
                "-t",
                "bulky",
                "-p",
                "0",
            ];
            let text = String::from_utf8(logctl.run_with_input(&args, "").stdout).unwrap();
            text.contains("\"elected\":true").then_some(())
        },
    );
    assert_eq!(
        cluster.leader_of("bulky", 0, Duration::from_secs(10)),
        leader
    );
    let (_, error) = logctl.fails(&["cluster", "elect-leaders", "-t", "missing"]);
    assert!(error.contains("does not exist"), "{error}");
}

#[test]
fn logctl_shows_a_hanging_transaction_what_it_holds_back_and_aborts_it() {
    let logd = Logd::start_with(&["--transaction-max-timeout-ms", "600000"]);
    let logctl = Logctl {
        bootstrap: logd.bootstrap(),
    };
    logctl.ok(&["topic", "create", "ledger", "-p", "1"]);
    // A producer asking for more than the broker allows is refused.
    let refused = strata_tests::python(
        r#"
import sys
from kafka import KafkaProducer
p = KafkaProducer(bootstrap_servers=sys.argv[1], transactional_id="greedy",
                  transaction_timeout_ms=900000)
try:
    p.init_transactions()
    print("accepted")
except Exception as e:
    print(type(e).__name__, e)
"#,
        &[&logd.bootstrap()],
    );
    assert!(refused.contains("InvalidTransactionTimeout"), "{refused}");

    logctl.ok_with_input(&["produce", "ledger"], "before\n");
    // A producer that opens a transaction and then never ends it.
    let mut hanging =
        strata_tests::open_kafka_python_transaction(&logd.bootstrap(), "stuck", 60000, "ledger", 4);
    logctl.ok_with_input(&["produce", "ledger"], "after\n");
    // A group that read everything read_committed consumers could.
    logctl.ok(&[
        "consume",
        "ledger",
        "-g",
        "audit",
        "--isolation",
        "read_committed",
        "--timeout-ms",
        "2000",
    ]);

    // Everything a read_committed reader gets, once nothing new arrives.
    let read_committed = || {
        logctl.ok(&[
            "consume",
            "ledger",
            "--isolation",
            "read_committed",
            "--timeout-ms",
            "2000",
        ])
    };
    let listed = json(&logctl.ok(&["--format", "json", "txn", "list"]));
    let stuck = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|txn| txn["transactional_id"] == "stuck")
        .unwrap_or_else(|| panic!("{listed}"));
    assert_eq!(stuck["state"], "Ongoing", "{listed}");
    assert!(stuck["open_ms"].as_i64().unwrap() >= 0, "{listed}");
    assert_eq!(stuck["partitions"].as_array().unwrap().len(), 1);
    let table = logctl.ok(&["txn", "list", "--state", "Ongoing"]);
    assert!(
        table.contains("OPEN-FOR") && table.contains("stuck"),
        "{table}"
    );
    let described = logctl.ok(&["txn", "describe", "stuck"]);
    assert!(described.contains("TXN-START"), "{described}");
    let described = json(&logctl.ok(&["--format", "json", "txn", "describe", "stuck"]));
    let partition = &described["partitions"][0];
    assert_eq!(partition["txn_start_offset"], 1, "{described}");
    assert_eq!(partition["last_stable_offset"], 1, "{described}");
    assert_eq!(partition["high_watermark"], 6, "{described}");
    assert_eq!(
        logd.metric("strata_partition_stable_lag_records{topic=\"ledger\",partition=\"0\"}"),
        Some(5.0)
    );
    let group = json(&logctl.ok(&["--format", "json", "group", "describe", "audit"]));
    let lag = &group["partitions"][0];
    assert_eq!(lag["committed_offset"], 1, "{group}");
    assert_eq!(lag["lag"], 5, "{group}");
    assert_eq!(lag["stable_lag"], 0, "{group}");
    let read = read_committed();
    assert_eq!(read, "before\n", "nothing after the open transaction yet");

    let said = logctl.ok(&["txn", "abort", "stuck"]);
    assert!(said.contains("aborted"), "{said}");
    // The producer is fenced (a new epoch) and nothing is open any more.
    let described = json(&logctl.ok(&["--format", "json", "txn", "describe", "stuck"]));
    assert_eq!(described["state"], "Empty", "{described}");
    assert!(
        described["producer_epoch"].as_i64() > stuck["producer_epoch"].as_i64(),
        "{described}"
    );
    assert_eq!(
        described["partitions"],
        serde_json::json!([]),
        "{described}"
    );
    let read = read_committed();
    assert_eq!(read, "before\nafter\n", "the aborted records stay hidden");
    let group = json(&logctl.ok(&["--format", "json", "group", "describe", "audit"]));
    assert_eq!(group["partitions"][0]["stable_lag"], 6, "{group}");
    assert_eq!(
        logd.metric("strata_partition_stable_lag_records{topic=\"ledger\",partition=\"0\"}"),
        Some(0.0)
    );
    assert_eq!(
        logd.metric(
            "strata_consumer_group_stable_lag_records{group=\"audit\",topic=\"ledger\",partition=\"0\"}"
        ),
        Some(6.0)
    );
    hanging.kill().unwrap();
    hanging.wait().unwrap();
    let (_, error) = logctl.fails(&["txn", "describe", "nobody"]);
    assert!(!error.is_empty());
    let (_, error) = logctl.fails(&["txn", "abort", "--topic", "ledger"]);
    assert!(error.contains("--producer-id"), "{error}");
}

/// One of the order saga's example services, its output in `dir`.
struct SagaService(std::process::Child);

impl SagaService {
    fn start(name: &str, bootstrap: &str, dir: &std::path::Path, args: &[&str]) -> SagaService {
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
        let child = Command::new(strata_tests::client_example(&format!("saga_{name}")))
            .args(["--bootstrap", bootstrap])
            .args(args)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start a saga service");
        SagaService(child)
    }
}

impl Drop for SagaService {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn logctl_lists_sagas_by_state_and_describes_a_stuck_one_and_its_dead_letter() {
    let logd = Logd::start();
    let bootstrap = logd.bootstrap();
    let logctl = Logctl {
        bootstrap: bootstrap.clone(),
    };
    let dir = tempfile::tempdir().unwrap();
    // Long deadlines: a saga whose payment is poisoned stays stuck.
    let slow = ["--step-timeout-ms", "600000"];
    let _order = SagaService::start(
        "order",
        &bootstrap,
        dir.path(),
        &[
            &slow[..],
            &[
                "--create",
                "true",
                "--partitions",
                "2",
                "--sagas",
                "40",
                "--id-prefix",
                "s-",
            ],
        ]
        .concat(),
    );
    strata_tests::wait_for(
        std::time::Duration::from_secs(30),
        "the saga's topics",
        || {
            let topics = logctl.ok(&["topic", "list"]);
            topics.contains("saga.order.shipping.state").then_some(())
        },
    );
    let _payment = SagaService::start(
        "payment",
        &bootstrap,
        dir.path(),
        &[&slow[..], &["--poison-rate", "0.2", "--fail-rate", "0.2"]].concat(),
    );
    let _inventory = SagaService::start("inventory", &bootstrap, dir.path(), &slow);
    let _shipping = SagaService::start("shipping", &bootstrap, dir.path(), &slow);

    let sagas = strata_tests::wait_for(
        std::time::Duration::from_secs(60),
        "40 sagas settled",
        || {
            let listed = json(&logctl.ok(&["--format", "json", "saga", "list"]));
            let sagas = listed.as_array().unwrap().clone();
            let settled = sagas.iter().all(|saga| {
                ["completed", "compensated", "stuck"].contains(&saga["state"].as_str().unwrap())
            });
            (sagas.len() == 40 && settled).then_some(sagas)
        },
    );
    let in_state = |state: &str| -> Vec<String> {
        sagas
            .iter()
            .filter(|saga| saga["state"] == state)
            .map(|saga| saga["id"].as_str().unwrap().to_string())
            .collect()
    };
    let (completed, compensated, stuck) = (
        in_state("completed"),
        in_state("compensated"),
        in_state("stuck"),
    );
    assert!(
        !completed.is_empty() && !compensated.is_empty() && !stuck.is_empty(),
        "{sagas:?}"
    );

    // The table, filtered by state.
    let table = logctl.ok(&["saga", "list", "--state", "stuck"]);
    assert!(table.starts_with("SAGA"), "{table}");
    assert_eq!(table.lines().count(), stuck.len() + 1, "{table}");
    assert!(
        table
            .lines()
            .skip(1)
            .all(|line| line.contains(" stuck ") && line.contains("SagaStepStuck")),
        "{table}"
    );

    // A stuck saga's timeline says which step, where, and why.
    let described = logctl.ok(&["saga", "describe", &stuck[0]]);
    assert!(
        described.contains(&format!("saga {} (order)  state: stuck", stuck[0])),
        "{described}"
    );
    assert!(described.contains("OrderPlaced"), "{described}");
    assert!(described.contains("SagaStepStuck"), "{described}");
    assert!(
        described.contains("action failed 5 times") && described.contains("injected poison"),
        "{described}"
    );
    let timeline = json(&logctl.ok(&["--format", "json", "saga", "describe", &compensated[0]]));
    let events: Vec<&str> = timeline["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["event"].as_str().unwrap())
        .collect();
    assert_eq!(events.first(), Some(&"OrderPlaced"));
    assert_eq!(events.last(), Some(&"OrderCancelled"), "{timeline}");

    // The dead-letter topic holds each stuck saga's event, with the reason.
    let dead = logctl.ok(&[
        "--format",
        "json",
        "consume",
        "saga.order.dead-letter",
        "--isolation",
        "read_committed",
        "-n",
        &stuck.len().to_string(),
    ]);
    let keys: std::collections::BTreeSet<String> = dead
        .lines()
        .map(|line| json(line)["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys, stuck.iter().cloned().collect(), "{dead}");
    assert!(dead.contains("dead-letter-reason"), "{dead}");

    // Counters and step latencies.
    let metrics = logctl.ok(&["saga", "metrics"]);
    assert!(
        metrics.contains("strata_saga_started_total{saga=\"order\"} 40"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "strata_saga_sagas{{saga=\"order\",state=\"stuck\"}} {}",
            stuck.len()
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("strata_saga_step_latency_ms{saga=\"order\",step=\"1\""),
        "{metrics}"
    );

    // Bad input is refused clearly.
    let (_, error) = logctl.fails(&["saga", "list", "--state", "bogus"]);
    assert!(error.contains("unknown saga state \"bogus\""), "{error}");
    let (_, error) = logctl.fails(&["saga", "describe", "no-such-saga"]);
    assert!(error.contains("no saga \"no-such-saga\""), "{error}");
}

#[test]
fn logctl_manages_users_and_connects_with_tls_and_scram_from_flags_or_a_command_config() {
    let dir = tempfile::tempdir().unwrap();
    let certificates =
        strata_tests::certificates::Certificates::create(dir.path(), "", "logctl test CA");
    let port = strata_tests::free_port();
    let mut args = vec![
        "--listener".to_string(),
        format!("SECURE=sasl_ssl://127.0.0.1:{port}"),
    ];
    args.extend(certificates.broker_flags());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let logd = Logd::start_with(&args);
    let local = Logctl {
        bootstrap: logd.bootstrap(),
    };
    let secure = Logctl {
        bootstrap: format!("127.0.0.1:{port}"),
    };

    // user create: the password from stdin, both SCRAM mechanisms.
    let out = local.ok_with_input(&["user", "create", "alice"], "wonderland\n");
    assert_eq!(out, "user 'alice' created: SCRAM-SHA-256, SCRAM-SHA-512\n");
    local.ok(&[
        "user",
        "create",
        "bob",
        "--password",
        "builder",
        "--mechanism",
        "SCRAM-SHA-256",
        "--iterations",
        "4096",
    ]);
    let out = local.ok(&["user", "list", "--format", "json"]);
    let users: Vec<serde_json::Value> = out.lines().map(json).collect();
    assert_eq!(users[0]["user"], "alice");
    assert_eq!(users[1]["credentials"][0]["mechanism"], "SCRAM-SHA-256");
    assert_eq!(users[1]["credentials"][0]["iterations"], 4096);
    let (_, error) = local.fails(&[
        "user",
        "create",
        "carol",
        "--password",
        "x",
        "--iterations",
        "10",
    ]);
    assert!(error.contains("iterations"), "{error}");

    // Flags...
    let ca = certificates.ca.display().to_string();
    let out = secure.ok(&[
        "--security-protocol",
        "SASL_SSL",
        "--tls-ca",
        &ca,
        "--sasl-username",
        "alice",
        "--sasl-password",
        "wonderland",
        "topic",
        "create",
        "secured",
    ]);
    assert_eq!(out, "created topic secured with 1 partitions\n");
    // ... or Kafka's properties, here in the Java clients' spelling.
    let properties = dir.path().join("client.properties");
    std::fs::write(
        &properties,
        format!(
            "security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-256\nssl.truststore.type=PEM\nssl.truststore.location={ca}\nsasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"bob\" password=\"builder\";\n"
        ),
    )
    .unwrap();
    let config = properties.display().to_string();
    let out = secure.ok(&["--command-config", &config, "topic", "list"]);
    assert!(out.contains("secured"), "{out}");
    // Every verb connects the same way, the saga views included.
    secure.ok(&["--command-config", &config, "saga", "list"]);

    // Mistakes say what to do.
    let (_, error) = secure.fails(&[
        "--command-config",
        &config,
        "--sasl-password",
        "nope",
        "topic",
        "list",
    ]);
    assert!(
        error.contains("cannot log in") && error.contains("invalid credentials"),
        "{error}"
    );
    let (_, error) = secure.fails(&["topic", "list"]);
    assert!(error.contains("--security-protocol"), "{error}");
    let (_, error) = local.fails(&["--security-protocol", "SASL_SSL", "topic", "list"]);
    assert!(error.contains("needs a user and a password"), "{error}");

    // user delete: a user without credentials can no longer log in.
    local.ok(&["user", "delete", "bob"]);
    let (_, error) = secure.fails(&["--command-config", &config, "topic", "list"]);
    assert!(error.contains("invalid credentials"), "{error}");
    let (_, error) = local.fails(&["user", "delete", "bob", "--mechanism", "SCRAM-SHA-256"]);
    assert!(error.contains("no SCRAM-SHA-256 credential"), "{error}");
    let out = local.ok(&["user", "list"]);
    assert!(!out.contains("bob") && out.contains("alice"), "{out}");
}
