//! Harness for black-box tests: real `logd` processes on free loopback ports
//! with a temporary data directory and a log file each, which tests can
//! kill -9, pause and restart, alone or as a cluster; and a minimal blocking
//! Kafka connection to drive them and read each broker's view.

pub mod certificates;
pub mod history;
pub mod network;
pub mod proxy;
pub mod saga_checker;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use strata_protocol::exchange;
use strata_protocol::frame::{FrameCodec, FrameReader};

/// How long a broker may take to start answering.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The `logd` binary built next to this test binary (cargo builds it for
/// `cargo test --workspace`, since `strata-broker` has integration tests).
pub fn logd_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let binary = profile_dir.join("logd");
    assert!(
        binary.exists(),
        "{} is missing: build it with `cargo build --release --bin logd`",
        binary.display()
    );
    binary
}

/// The example program `name` of strata-client (the saga services),
/// built next to this test binary; built now if it is missing (cargo
/// builds examples for `cargo test --workspace`, not for `-p strata-tests`).
pub fn client_example(name: &str) -> PathBuf {
    let profile_dir = logd_binary()
        .parent()
        .expect("target/<profile>")
        .to_path_buf();
    let example = profile_dir.join("examples").join(name);
    if !example.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "-p", "strata-client", "--examples"]);
        if profile_dir.ends_with("release") {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build");
        assert!(
            status.success(),
            "building the strata-client examples failed"
        );
    }
    assert!(example.exists(), "{} is missing", example.display());
    example
}

/// A port nobody listens on right now, below the kernel's ephemeral range
/// (32768 and up by default): a port from that range can be taken by any
/// outgoing connection (brokers open many) between this check and the
/// broker binding it, or while a killed broker is down.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    // Test binaries run at once; start each at its own place.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7_919);
    for _ in 0..COUNT {
        let port = FIRST + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % COUNT;
        if TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + COUNT);
}

/// A `logd` process and everything it owns.
pub struct Logd {
    child: Option<Child>,
    pub node_id: i32,
    pub address: SocketAddr,
    controller_port: u16,
    pub metrics_port: u16,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    /// Flags beyond the addresses and data directory (group bounds, cluster
    /// membership).
    args: Vec<String>,
    /// Stopped with SIGSTOP: it accepts connections but answers nothing.
    pub paused: bool,
    /// Environment added to the process's (libfaketime's settings).
    env: Vec<(String, String)>,
    /// The file libfaketime reads this broker's clock offset from, if its
    /// clock can be moved.
    clock_file: Option<PathBuf>,
    /// The data directory is a tmpfs this broker owns.
    small_disk: bool,
    _dir: tempfile::TempDir,
}

impl Logd {
    /// A broker on free ports that is not running yet.
    fn new(node_id: i32) -> Logd {
        let dir = tempfile::tempdir().expect("temp dir");
        Logd {
            child: None,
            node_id,
            address: SocketAddr::from(([127, 0, 0, 1], free_port())),
            controller_port: free_port(),
            metrics_port: free_port(),
            data_dir: dir.path().join("data"),
            log_path: dir.path().join("logd.log"),
            args: vec![
                "--group-min-session-timeout-ms".into(),
                GROUP_MIN_SESSION_TIMEOUT_MS.to_string(),
                "--group-initial-rebalance-delay-ms".into(),
                GROUP_INITIAL_REBALANCE_DELAY_MS.to_string(),
            ],
            paused: false,
            env: Vec::new(),
            clock_file: None,
            small_disk: false,
            _dir: dir,
        }
    }

    /// Preloads libfaketime (at `library`) so the wall clock of this
    /// broker follows an offset in a file the test writes. Only the wall
    /// clock moves, as when an operator or NTP steps it: monotonic time,
    /// which timeouts run on, never jumps.
    fn fake_clock(&mut self, library: &Path) {
        let clock_file = self.log_path.with_file_name("clock-offset");
        std::fs::write(&clock_file, "+0\n").expect("write the clock offset");
        self.env = vec![
            ("LD_PRELOAD".into(), library.display().to_string()),
            (
                "FAKETIME_TIMESTAMP_FILE".into(),
                clock_file.display().to_string(),
            ),
            // Read the file again at most once a second.
            ("FAKETIME_CACHE_DURATION".into(), "1".into()),
            ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
        ];
        self.clock_file = Some(clock_file);
    }

    /// Moves this broker's wall clock `seconds` away from the real one
    /// (within about a second). False if its clock cannot be moved (no
    /// libfaketime).
    pub fn set_clock_offset(&self, seconds: i64) -> bool {
        let Some(clock_file) = &self.clock_file else {
            return false;
        };
        std::fs::write(clock_file, format!("{seconds:+}\n")).expect("write the clock offset");
        true
    }

    /// Starts a single-node broker and waits until it answers.
    pub fn start() -> Logd {
        Logd::start_with(&[])
    }

    /// Starts a single-node broker with `args` added to the defaults and
    /// waits until it answers.
    pub fn start_with(args: &[&str]) -> Logd {
        Logd::new(1).start_single(args)
    }

    /// Starts a single-node broker whose data directory is a tmpfs of
    /// `bytes`, so that its disk fills up; `None` without the right to
    /// mount one (root).
    pub fn start_on_small_disk(bytes: u64, args: &[&str]) -> Option<Logd> {
        let mut logd = Logd::new(1);
        std::fs::create_dir_all(&logd.data_dir).expect("data directory");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(&logd.data_dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        logd.small_disk = mounted;
        mounted.then(|| logd.start_single(args))
    }

    fn start_single(mut self, args: &[&str]) -> Logd {
        self.args.extend(args.iter().map(|arg| arg.to_string()));
        // A picked port may be taken before logd binds it: pick again.
        for _ in 0..5 {
            match self.try_spawn() {
                Ok(()) => return self,
                Err(log) if log.contains("Address already in use") => {
                    self.address.set_port(free_port());
                    self.controller_port = free_port();
                    self.metrics_port = free_port();
                }
                Err(log) => panic!("logd exited during start:\n{log}"),
            }
        }
        panic!("logd found no free ports in five tries:\n{}", self.log());
    }

    fn spawn(&mut self) {
        if let Err(log) = self.try_spawn() {
            panic!("logd exited during start:\n{log}");
        }
    }

    /// Starts the process; `Err` with its log if it exits during start.
    fn try_spawn(&mut self) -> Result<(), String> {
        self.launch();
        self.wait_ready()
    }

    /// Starts the process without waiting for it.
    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("log file");
        let child = Command::new(logd_binary())
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .arg("--node-id")
            .arg(self.node_id.to_string())
            .args(&self.args)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(self.address.to_string())
            .arg("--controller-listen")
            .arg(format!("127.0.0.1:{}", self.controller_port))
            .arg("--metrics-listen")
            .arg(format!("127.0.0.1:{}", self.metrics_port))
            .arg("--log-level")
            .arg("info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start logd");
        self.child = Some(child);
    }

    /// Waits until the launched process answers as itself; `Err` with its
    /// log if it exits first.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            // Free ports are picked before logd binds them, so another
            // broker may hold this one: only this logd's cluster id counts.
            if self
                .answering_cluster_id()
                .is_some_and(|id| Some(id) == self.cluster_id())
            {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!("exit status {status}\n{}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "logd did not answer within {START_TIMEOUT:?}:\n{}",
            self.log()
        );
    }

    /// The cluster id this logd keeps in its data directory.
    fn cluster_id(&self) -> Option<String> {
        std::fs::read_to_string(self.data_dir.join("cluster-id"))
            .ok()
            .map(|id| id.trim().to_string())
    }

    /// The cluster id of whatever broker answers on this logd's address.
    fn answering_cluster_id(&self) -> Option<String> {
        use kafka_protocol::messages::MetadataRequest;
        let mut connection = Connection::open(self.address).ok()?;
        let request =
            RequestKind::Metadata(MetadataRequest::default().with_topics(Some(Vec::new())));
        match connection.send(ApiKey::Metadata, 12, &request).ok()? {
            ResponseKind::Metadata(response) => response.cluster_id.map(|id| id.to_string()),
            _ => None,
        }
    }

    /// Kills the process with SIGKILL: no flush, no goodbye.
    pub fn kill9(&mut self) {
        self.paused = false;
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9");
            child.wait().expect("reap");
        }
    }

    /// Starts the process again on the same ports and data.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Freezes the process (SIGSTOP): it holds its sockets but answers
    /// nothing. Returns once every thread has stopped: kill(2) only queues
    /// the stop, and a thread inside a system call runs on until it returns.
    pub fn pause(&mut self) {
        self.signal(libc::SIGSTOP);
        self.paused = true;
        let tasks = PathBuf::from(format!("/proc/{}/task", self.pid()));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let states: Vec<String> = std::fs::read_dir(&tasks)
                .expect("task list")
                .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("stat")).ok())
                .collect();
            // The state follows the parenthesised command name.
            let stopped = |stat: &String| {
                stat.rsplit_once(") ")
                    .is_some_and(|(_, rest)| rest.starts_with('T'))
            };
            if states.iter().all(stopped) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "logd did not stop within 10 s: {states:?}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Thaws a paused process (SIGCONT).
    pub fn resume(&mut self) {
        self.signal(libc::SIGCONT);
        self.paused = false;
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("logd runs").id()
    }

    fn signal(&mut self, signal: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        let result = unsafe { libc::kill(self.pid() as libc::pid_t, signal) };
        assert_eq!(result, 0, "kill({signal}) failed");
    }

    /// Where its controller listener is (bound if it is a voter).
    pub fn controller_address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.controller_port))
    }

    /// Asks the broker to re-read its TLS files (SIGHUP).
    pub fn hangup(&mut self) {
        self.signal(libc::SIGHUP);
    }

    /// The resident memory of the process, from /proc (Linux).
    pub fn rss_bytes(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| child.try_wait().ok().flatten().is_none())
    }

    pub fn bootstrap(&self) -> String {
        self.address.to_string()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn connect(&self) -> Connection {
        Connection::open(self.address).expect("connect to logd")
    }

    /// This broker's view of the cluster, or `None` if it does not answer.
    pub fn view(&self) -> Option<View> {
        View::of(self.address)
    }

    /// The metadata quorum as this broker reports it (DescribeQuorum):
    /// `(leader, term)`, or `None` if it does not answer or knows no leader.
    pub fn quorum(&self) -> Option<(i32, i32)> {
        use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
        use kafka_protocol::messages::{DescribeQuorumRequest, TopicName};
        let topic = TopicData::default()
            .with_topic_name(TopicName(StrBytes::from_static_str("__cluster_metadata")))
            .with_partitions(vec![PartitionData::default()]);
        let request = DescribeQuorumRequest::default().with_topics(vec![topic]);
        let mut connection = Connection::open(self.address).ok()?;
        let response = connection
            .send(
                ApiKey::DescribeQuorum,
                0,
                &RequestKind::DescribeQuorum(request),
            )
            .ok()?;
        let ResponseKind::DescribeQuorum(response) = response else {
            return None;
        };
        let partition = response.topics.first()?.partitions.first()?;
        (partition.error_code == 0 && partition.leader_id.0 >= 0)
            .then_some((partition.leader_id.0, partition.leader_epoch))
    }

    /// Simulates a power failure that took the writes this stopped broker
    /// had not flushed: its copy of `topic`/`partition` loses every byte from
    /// the batch holding `offset` on (the segment's preallocated space reads
    /// as zeros again). Returns where the log now ends.
    pub fn lose_log_tail(&self, topic: &str, partition: i32, offset: i64) -> i64 {
        use strata_storage::batch::BatchIter;
        assert!(self.child.is_none(), "stop broker {} first", self.node_id);
        let dir = self.data_dir.join(format!("{topic}-{partition}"));
        let mut segments: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("partition directory")
            .map(|entry| entry.expect("directory entry").path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
            .collect();
        segments.sort();
        assert_eq!(segments.len(), 1, "a log of one segment");
        let bytes = std::fs::read(&segments[0]).expect("read segment");
        let mut position = 0;
        for (header, batch) in BatchIter::new(&bytes) {
            if header.last_offset() >= offset {
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&segments[0])
                    .expect("open segment");
                file.set_len(position as u64).expect("cut");
                file.set_len(bytes.len() as u64).expect("grow back");
                file.sync_all().expect("sync");
                return header.base_offset;
            }
            position += batch.len();
        }
        panic!(
            "{topic}-{partition} on broker {} ends before {offset}",
            self.node_id
        );
    }

    /// The value of gauge or counter `name` on `/metrics`.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let mut stream =
            TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], self.metrics_port))).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nhost: logd\r\n\r\n")
            .ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }
}

/// One partition as a broker's metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionView {
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

/// A broker's Metadata answer: the alive brokers and every partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub controller: i32,
    pub brokers: Vec<i32>,
    pub partitions: std::collections::BTreeMap<(String, i32), PartitionView>,
}

impl View {
    pub fn of(address: SocketAddr) -> Option<View> {
        use kafka_protocol::messages::MetadataRequest;
        let mut connection = Connection::open(address).ok()?;
        let request = RequestKind::Metadata(MetadataRequest::default().with_topics(None));
        let ResponseKind::Metadata(response) =
            connection.send(ApiKey::Metadata, 12, &request).ok()?
        else {
            return None;
        };
        let mut partitions = std::collections::BTreeMap::new();
        for topic in &response.topics {
            let name = topic.name.as_ref()?.0.to_string();
            for partition in &topic.partitions {
                let ids = |list: &[kafka_protocol::messages::BrokerId]| {
                    list.iter().map(|id| id.0).collect::<Vec<_>>()
                };
                partitions.insert(
                    (name.clone(), partition.partition_index),
                    PartitionView {
                        leader: partition.leader_id.0,
                        leader_epoch: partition.leader_epoch,
                        replicas: ids(&partition.replica_nodes),
                        isr: ids(&partition.isr_nodes),
                    },
                );
            }
        }
        Some(View {
            controller: response.controller_id.0,
            brokers: response
                .brokers
                .iter()
                .map(|broker| broker.node_id.0)
                .collect(),
            partitions,
        })
    }

    /// How many partitions each broker leads.
    pub fn leader_counts(&self) -> std::collections::BTreeMap<i32, usize> {
        let mut counts = std::collections::BTreeMap::new();
        for partition in self.partitions.values() {
            *counts.entry(partition.leader).or_insert(0) += 1;
        }
        counts
    }
}

/// Brokers that are all controller voters (combined mode), with short
/// heartbeat and session timeouts so failures are noticed quickly.
pub struct Cluster {
    pub nodes: Vec<Logd>,
}

/// Call first in a test that starts a cluster: one cluster at a time, since
/// many brokers on two cores would turn timing assertions into a measure of
/// the machine's load.
pub fn one_cluster_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Polls `probe` until it returns `Some`, for at most `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Heartbeat interval, session timeout and replica lag limit of test
/// clusters.
pub const HEARTBEAT_INTERVAL_MS: u64 = 200;
pub const SESSION_TIMEOUT_MS: u64 = 2_000;
pub const REPLICA_LAG_MS: u64 = 2_000;
/// Consumer group bounds of test clusters: sessions as short as a second,
/// and a short wait for more members before a group's first rebalance.
pub const GROUP_MIN_SESSION_TIMEOUT_MS: u64 = 1_000;
pub const GROUP_INITIAL_REBALANCE_DELAY_MS: u64 = 500;

impl Cluster {
    /// Starts `size` brokers, ids 1..=size, all voters, and waits until
    /// all answer.
    pub fn start(size: i32) -> Cluster {
        Cluster::start_with_voters(size, size)
    }

    /// Starts `size` brokers, ids 1..=size, of which the first `voters`
    /// run controller voters, and waits until all answer.
    pub fn start_with_voters(size: i32, voters: i32) -> Cluster {
        Cluster::start_advertising(size, voters, &[], &[])
    }

    /// `size` brokers, all voters, each also given `args`.
    pub fn start_with_args(size: i32, args: &[&str]) -> Cluster {
        Cluster::start_advertising(size, size, &[], args)
    }

    /// `size` brokers, all voters, broker `id` also given `node_args(id)`
    /// (its own listener ports, say).
    pub fn start_with_node_args(size: i32, node_args: impl Fn(i32) -> Vec<String>) -> Cluster {
        let mut nodes: Vec<Logd> = (1..=size).map(Logd::new).collect();
        for node in &mut nodes {
            node.args.extend(node_args(node.node_id));
        }
        let voters = nodes
            .iter()
            .map(|node| format!("{}@127.0.0.1:{}", node.node_id, node.controller_port))
            .collect::<Vec<_>>()
            .join(",");
        Cluster::launch(nodes, &voters, &[])
    }

    /// Starts `size` brokers, all voters, each behind a [`FaultProxy`]
    /// it advertises: clients and followers reach broker `id` through
    /// `proxies[id - 1]`.
    pub fn start_behind_proxies(size: i32) -> (Cluster, Vec<proxy::FaultProxy>) {
        let proxies: Vec<proxy::FaultProxy> =
            (0..size).map(|_| proxy::FaultProxy::bind()).collect();
        let cluster = Cluster::start_advertising(size, size, &proxies, &[]);
        (cluster, proxies)
    }

    /// Starts the brokers, broker `id` advertising `proxies[id - 1]` if
    /// given.
    fn start_advertising(
        size: i32,
        voters: i32,
        proxies: &[proxy::FaultProxy],
        args: &[&str],
    ) -> Cluster {
        let mut nodes: Vec<Logd> = (1..=size).map(Logd::new).collect();
        for (node, proxy) in nodes.iter_mut().zip(proxies) {
            proxy.forward_to(node.address);
            node.args
                .extend(["--advertise".to_string(), proxy.address.to_string()]);
        }
        let voters = nodes
            .iter()
            .filter(|node| node.node_id <= voters)
            .map(|node| format!("{}@127.0.0.1:{}", node.node_id, node.controller_port))
            .collect::<Vec<_>>()
            .join(",");
        Cluster::launch(nodes, &voters, args)
    }

    /// Starts `size` brokers, all voters, on a [`network::Network`]: each
    /// advertises its Kafka proxy and finds the voters at their controller
    /// proxies, so every link between brokers (and from clients) crosses
    /// the network. Where libfaketime is installed, each broker's wall
    /// clock can be moved ([`Logd::set_clock_offset`]).
    pub fn start_on_network(size: i32, args: &[&str]) -> (Cluster, network::Network) {
        use network::Port;
        let mut network = network::Network::new(size);
        let mut nodes: Vec<Logd> = (1..=size).map(Logd::new).collect();
        let faketime = faketime_library();
        for node in &mut nodes {
            let controller = SocketAddr::from(([127, 0, 0, 1], node.controller_port));
            network.forward(node.node_id, Port::Kafka, node.address);
            network.forward(node.node_id, Port::Controller, controller);
            let advertised = network.address(node.node_id, Port::Kafka);
            node.args
                .extend(["--advertise".to_string(), advertised.to_string()]);
            if let Some(library) = &faketime {
                node.fake_clock(library);
            }
        }
        let voters = nodes
            .iter()
            .map(|node| {
                let address = network.address(node.node_id, Port::Controller);
                format!("{}@{address}", node.node_id)
            })
            .collect::<Vec<_>>()
            .join(",");
        (Cluster::launch(nodes, &voters, args), network)
    }

    /// Launches `nodes` as a cluster of controller `voters` and waits
    /// until every broker answers. A timing flag in `args` replaces the
    /// test clusters' default.
    fn launch(mut nodes: Vec<Logd>, voters: &str, args: &[&str]) -> Cluster {
        let timings = [
            ("--broker-heartbeat-interval-ms", HEARTBEAT_INTERVAL_MS),
            ("--broker-session-timeout-ms", SESSION_TIMEOUT_MS),
            ("--replica-lag-time-max-ms", REPLICA_LAG_MS),
        ];
        for node in &mut nodes {
            node.args
                .extend(["--controllers".to_string(), voters.to_string()]);
            for (flag, default) in timings {
                if !args.contains(&flag) {
                    node.args.extend([flag.to_string(), default.to_string()]);
                }
            }
            node.args.extend(args.iter().map(|arg| arg.to_string()));
            node.launch();
        }
        for node in &mut nodes {
            if let Err(log) = node.wait_ready() {
                panic!("broker {} exited during start:\n{log}", node.node_id);
            }
        }
        Cluster { nodes }
    }

    /// Broker `id` (1-based).
    pub fn node(&mut self, id: i32) -> &mut Logd {
        &mut self.nodes[id as usize - 1]
    }

    /// Every broker's address, comma-separated.
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(Logd::bootstrap)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The controller leader as the running brokers agree on it, waiting up
    /// to `timeout` for them to agree.
    pub fn controller_leader(&mut self, timeout: Duration) -> (i32, i32) {
        let deadline = Instant::now() + timeout;
        loop {
            let mut answers = Vec::new();
            for node in &mut self.nodes {
                if node.is_running() && !node.paused {
                    answers.push(node.quorum());
                }
            }
            if let Some(Some(first)) = answers.first() {
                if answers.iter().all(|answer| answer.as_ref() == Some(first)) {
                    return *first;
                }
            }
            assert!(
                Instant::now() < deadline,
                "brokers did not agree on a controller leader within {timeout:?}: {answers:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The leader of `topic`/`partition` as the first answering broker sees
    /// it, once it has one.
    pub fn leader_of(&mut self, topic: &str, partition: i32, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        loop {
            let leader = self
                .nodes
                .iter_mut()
                .filter(|node| !node.paused)
                .find_map(|node| node.view())
                .and_then(|view| {
                    view.partitions
                        .get(&(topic.to_string(), partition))
                        .map(|p| p.leader)
                });
            if let Some(leader) = leader.filter(|&leader| leader > 0) {
                return leader;
            }
            assert!(
                Instant::now() < deadline,
                "{topic}-{partition} has no leader after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every log, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|node| format!("--- broker {} ---\n{}", node.node_id, node.log()))
            .collect()
    }
}

impl Drop for Logd {
    fn drop(&mut self) {
        self.kill9();
        if self.small_disk {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.data_dir)
                .status();
        }
    }
}

/// A blocking Kafka connection that sends one request at a time.
pub struct Connection {
    stream: TcpStream,
    correlation_id: i32,
    responses: FrameReader,
}

impl Connection {
    pub fn open(address: SocketAddr) -> std::io::Result<Connection> {
        let stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            correlation_id: 0,
            responses: FrameReader::new(FrameCodec::new(512 << 20)),
        })
    }

    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Sends `body` as `api_key` v`api_version` and returns the response.
    pub fn send(
        &mut self,
        api_key: ApiKey,
        api_version: i16,
        body: &RequestKind,
    ) -> std::io::Result<ResponseKind> {
        let correlation_id = self.write_request(api_key, api_version, body)?;
        self.read_response(api_key, api_version, correlation_id)
    }

    /// Writes `body` as `api_key` v`api_version` without waiting for its
    /// response (pipelining); returns its correlation id.
    pub fn write_request(
        &mut self,
        api_key: ApiKey,
        api_version: i16,
        body: &RequestKind,
    ) -> std::io::Result<i32> {
        self.correlation_id += 1;
        let mut frame = BytesMut::new();
        let client_id = StrBytes::from_static_str("strata-tests");
        exchange::encode_request(
            &mut frame,
            api_key,
            api_version,
            self.correlation_id,
            Some(&client_id),
            |frame| body.encode(frame, api_version),
        )?;
        self.stream.write_all(&frame)?;
        Ok(self.correlation_id)
    }

    /// Reads the next response, which must be the one to the request with
    /// `correlation_id` (Kafka answers a connection's requests in order).
    pub fn read_response(
        &mut self,
        api_key: ApiKey,
        api_version: i16,
        correlation_id: i32,
    ) -> std::io::Result<ResponseKind> {
        let mut body = self
            .responses
            .read_blocking(&mut self.stream)?
            .ok_or(std::io::ErrorKind::UnexpectedEof)?
            .freeze();
        let got = exchange::decode_response_header(api_key, api_version, &mut body)?;
        if got != correlation_id {
            return Err(exchange::ExchangeError::Correlation {
                got,
                expected: correlation_id,
            }
            .into());
        }
        ResponseKind::decode(api_key, &mut body, api_version)
            .map_err(|error| exchange::malformed(api_key, api_version, error).into())
    }

    pub fn api_versions(&mut self) -> std::io::Result<ResponseKind> {
        let body = RequestKind::ApiVersions(Default::default());
        self.send(ApiKey::ApiVersions, 3, &body)
    }
}

/// What `kcat -L` lists for `bootstrap`.
pub fn kcat_listing(bootstrap: &str) -> String {
    let listing = Command::new("kcat")
        .args(["-b", bootstrap, "-L"])
        .output()
        .expect("kcat -L");
    String::from_utf8_lossy(&listing.stdout).into_owned()
}

/// Produces lines `N:value-N` for N in `0..count` to `topic` with kcat
/// (`acks=all`, the key is N, so librdkafka's murmur2 picks the partition);
/// true if kcat succeeded.
pub fn kcat_produce_keyed_lines(bootstrap: &str, topic: &str, count: u32) -> bool {
    let input: String = (0..count)
        .map(|line| format!("{line}:value-{line}\n"))
        .collect();
    let mut producer = Command::new("kcat")
        .args(["-b", bootstrap, "-P", "-t", topic, "-K:", "-X", "acks=all"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("kcat -P");
    producer
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input.as_bytes())
        .expect("write to kcat");
    producer.wait().expect("kcat -P runs").success()
}

/// Runs `python3` on `script` with `args`; returns stdout, panicking with
/// stderr on failure.
pub fn python(script: &str, args: &[&str]) -> String {
    let output = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("run python3");
    assert!(
        output.status.success(),
        "python failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

/// A kafka-python transactional producer (`transactional_id`, with
/// `transaction_timeout_ms`) that writes `count` records to partition 0 of
/// `topic` in a transaction it leaves open; returned once the records
/// are written. It then sleeps: kill it to leave the transaction hanging.
pub fn open_kafka_python_transaction(
    bootstrap: &str,
    transactional_id: &str,
    transaction_timeout_ms: u32,
    topic: &str,
    count: u32,
) -> std::process::Child {
    let script = r#"
import sys, time
from kafka import KafkaProducer
p = KafkaProducer(bootstrap_servers=sys.argv[1], transactional_id=sys.argv[2],
                  transaction_timeout_ms=int(sys.argv[3]))
p.init_transactions()
p.begin_transaction()
for i in range(int(sys.argv[5])): p.send(sys.argv[4], value=b"open-%d" % i, partition=0)
p.flush()
print("open", flush=True)
time.sleep(600)
"#;
    let mut child = Command::new("python3")
        .args(["-c", script, bootstrap, transactional_id])
        .arg(transaction_timeout_ms.to_string())
        .arg(topic)
        .arg(count.to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run python3");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("piped stdout")),
        &mut line,
    )
    .expect("read the producer's output");
    assert_eq!(line.trim(), "open", "the transaction did not open");
    child
}

/// Creates `name` with `partition_count` partitions (replication factor 1).
pub fn create_topic(logd: &Logd, name: &str, partition_count: i32) {
    create_replicated_topic(logd, name, partition_count, 1);
}

/// Creates `name` through `logd` with `partition_count` partitions of
/// `replication_factor` replicas.
pub fn create_replicated_topic(
    logd: &Logd,
    name: &str,
    partition_count: i32,
    replication_factor: i16,
) {
    create_configured_topic(logd, name, partition_count, replication_factor, &[]);
}

/// Creates `name` through `logd`, with topic `configs`.
pub fn create_configured_topic(
    logd: &Logd,
    name: &str,
    partition_count: i32,
    replication_factor: i16,
    configs: &[(&str, &str)],
) {
    use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
    use kafka_protocol::messages::{CreateTopicsRequest, TopicName};
    let configs = configs
        .iter()
        .map(|(key, value)| {
            CreatableTopicConfig::default()
                .with_name(StrBytes::from_string(key.to_string()))
                .with_value(Some(StrBytes::from_string(value.to_string())))
        })
        .collect();
    let topic = CreatableTopic::default()
        .with_name(TopicName(StrBytes::from_string(name.to_string())))
        .with_num_partitions(partition_count)
        .with_replication_factor(replication_factor)
        .with_configs(configs);
    let request = RequestKind::CreateTopics(
        CreateTopicsRequest::default()
            .with_topics(vec![topic])
            .with_timeout_ms(10_000),
    );
    let ResponseKind::CreateTopics(response) = logd
        .connect()
        .send(ApiKey::CreateTopics, 5, &request)
        .expect("create topic")
    else {
        panic!("not a CreateTopics response");
    };
    assert_eq!(
        response.topics[0].error_code, 0,
        "create {name}: {:?}",
        response.topics[0].error_message
    );
}

/// Produces one batch of `values` to `topic`/`partition` with `acks` over
/// `connection`; returns the base offset, or the error code.
pub fn produce(
    connection: &mut Connection,
    topic: &str,
    partition: i32,
    acks: i16,
    values: &[Vec<u8>],
) -> std::io::Result<Result<i64, i16>> {
    let request = produce_request(topic, partition, acks, None, values);
    produce_outcome(connection.send(ApiKey::Produce, PRODUCE_VERSION, &request)?)
}

/// The idempotence fields of a produced batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerFields {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

/// Asks `connection`'s broker for a producer id (InitProducerId).
pub fn init_producer_id(connection: &mut Connection) -> std::io::Result<(i64, i16)> {
    use kafka_protocol::messages::InitProducerIdRequest;
    let request = RequestKind::InitProducerId(
        InitProducerIdRequest::default().with_transaction_timeout_ms(60_000),
    );
    match connection.send(ApiKey::InitProducerId, 4, &request)? {
        ResponseKind::InitProducerId(response) if response.error_code == 0 => {
            Ok((response.producer_id.0, response.producer_epoch))
        }
        other => Err(std::io::Error::other(format!(
            "InitProducerId failed: {other:?}"
        ))),
    }
}

/// The Produce version the harness speaks.
pub const PRODUCE_VERSION: i16 = 7;

/// A Produce request of one batch of `values` to `topic`/`partition`, with a
/// 30 s timeout; from an idempotent producer if `producer` is given.
pub fn produce_request(
    topic: &str,
    partition: i32,
    acks: i16,
    producer: Option<ProducerFields>,
    values: &[Vec<u8>],
) -> RequestKind {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, TopicName};
    use strata_storage::record::{BatchBuilder, Record};
    let mut builder = BatchBuilder::new(now_ms());
    if let Some(producer) = producer {
        builder = builder.producer(
            strata_storage::batch::ProducerId(producer.producer_id),
            producer.producer_epoch,
            producer.base_sequence,
        );
    }
    for value in values {
        builder.push(Record::value(value));
    }
    let data = PartitionProduceData::default()
        .with_index(partition)
        .with_records(Some(Bytes::from(builder.build())));
    let topic = TopicProduceData::default()
        .with_name(TopicName(StrBytes::from_string(topic.to_string())))
        .with_partition_data(vec![data]);
    RequestKind::Produce(
        ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![topic]),
    )
}

/// The base offset a Produce response of one partition reports, or its
/// error code.
pub fn produce_outcome(response: ResponseKind) -> std::io::Result<Result<i64, i16>> {
    match response {
        ResponseKind::Produce(response) => {
            let partition = &response.responses[0].partition_responses[0];
            Ok(if partition.error_code == 0 {
                Ok(partition.base_offset)
            } else {
                Err(partition.error_code)
            })
        }
        other => Err(std::io::Error::other(format!(
            "unexpected response {other:?}"
        ))),
    }
}

/// Every record of `topic`/`partition` from offset 0 up to the high
/// watermark, as `(offset, value)`.
pub fn fetch_all(connection: &mut Connection, topic: &str, partition: i32) -> Vec<(i64, Vec<u8>)> {
    use strata_storage::batch::BatchHeader;
    use strata_storage::compression::batch_records;
    use strata_storage::record::RecordIter;
    let mut records = Vec::new();
    for batch in fetch_batches(connection, topic, partition) {
        let header = BatchHeader::parse(&batch).expect("whole batch");
        let section = batch_records(&batch, 64 << 20).expect("decompresses");
        for record in RecordIter::from_records(&section, header.record_count) {
            let record = record.expect("well-formed record");
            records.push((
                header.base_offset + record.offset_delta,
                record.value.unwrap_or_default().to_vec(),
            ));
        }
    }
    records
}

/// Every batch of `topic`/`partition` from offset 0 up to the high
/// watermark, each checked against its CRC.
pub fn fetch_batches(connection: &mut Connection, topic: &str, partition: i32) -> Vec<Bytes> {
    fetch_batches_as(connection, topic, partition, -1, i64::MAX)
}

/// Every batch of this broker's own replica of `topic`/`partition` that
/// starts below `end`, leader or follower, read up to its log end (Kafka's
/// debugging replica id), each checked against its CRC. Fewer if the
/// replica ends sooner.
pub fn replica_batches(
    connection: &mut Connection,
    topic: &str,
    partition: i32,
    end: i64,
) -> Vec<Bytes> {
    fetch_batches_as(connection, topic, partition, -2, end)
}

fn fetch_batches_as(
    connection: &mut Connection,
    topic: &str,
    partition: i32,
    replica_id: i32,
    end: i64,
) -> Vec<Bytes> {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{BrokerId, FetchRequest, TopicName};
    use strata_storage::batch::BatchIter;
    let mut batches = Vec::new();
    let mut offset = 0;
    while offset < end {
        let fetch = FetchPartition::default()
            .with_partition(partition)
            .with_fetch_offset(offset)
            .with_partition_max_bytes(1 << 20);
        let topic = FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![fetch]);
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(replica_id))
            .with_max_wait_ms(0)
            .with_max_bytes(4 << 20)
            .with_topics(vec![topic]);
        let ResponseKind::Fetch(response) = connection
            .send(ApiKey::Fetch, 11, &RequestKind::Fetch(request))
            .expect("fetch")
        else {
            panic!("not a Fetch response");
        };
        let data = &response.responses[0].partitions[0];
        assert_eq!(data.error_code, 0, "fetch error");
        let bytes = data.records.clone().unwrap_or_default();
        if bytes.is_empty() {
            assert!(
                replica_id != -1 || offset == data.high_watermark,
                "an empty fetch happens only at the high watermark"
            );
            break;
        }
        for (header, batch) in BatchIter::new(&bytes) {
            strata_storage::batch::BatchHeader::validate(batch, usize::MAX)
                .expect("fetched batches are intact");
            if header.last_offset() >= offset && header.base_offset < end {
                batches.push(bytes.slice_ref(batch));
            }
            offset = header.last_offset() + 1;
        }
    }
    batches
}

/// libfaketime, where Debian's `faketime` package puts it, if installed.
pub fn faketime_library() -> Option<PathBuf> {
    let lib = std::fs::read_dir("/usr/lib").ok()?;
    lib.flatten()
        .map(|entry| entry.path().join("faketime/libfaketime.so.1"))
        .find(|path| path.exists())
}

/// A small xorshift generator: randomized tests print their seed so a
/// failure can be replayed.
pub struct Rng(pub u64);

impl Rng {
    /// A number in `0..bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }

    /// The seed in environment variable `name`, or one from the clock.
    pub fn seeded_from(name: &str) -> (Rng, u64) {
        let seed = std::env::var(name)
            .ok()
            .and_then(|seed| seed.parse().ok())
            .unwrap_or_else(|| now_ms() as u64 | 1);
        (Rng(seed), seed)
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// Every argument of `command` and its subcommands that has no help text,
/// as `command subcommand argument`; CLIs check it is empty.
pub fn arguments_without_help(command: &clap::Command) -> Vec<String> {
    fn check(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in command.get_arguments() {
            let builtin = matches!(arg.get_id().as_str(), "help" | "version");
            if !builtin && arg.get_help().is_none() {
                missing.push(format!("{path} {}", arg.get_id()));
            }
        }
        for sub in command.get_subcommands() {
            check(sub, &format!("{path} {}", sub.get_name()), missing);
        }
    }
    let mut missing = Vec::new();
    check(command, command.get_name(), &mut missing);
    missing
}
