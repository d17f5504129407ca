//! `logd`: the Strata broker. With no flags it is a complete single-node
//! cluster: node 1, data in `./data`, Kafka clients on 127.0.0.1:9092, the
//! controller on 127.0.0.1:9093. With `--controllers` it is one broker of a
//! cluster, and runs a controller voter if its id is listed there.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Parser;
use serde::Deserialize;
use std::net::ToSocketAddrs;
use strata_broker::config::{
    ClientAuth, ListenerConfig, SecurityConfig, SecurityProtocol, TlsConfig,
};
use strata_broker::{Broker, BrokerConfig};
use strata_protocol::alloc::ReserveLargeAllocator;
use strata_protocol::sasl::Mechanism;
use tracing_subscriber::EnvFilter;

/// Hostile frames must not abort the process (see `strata_protocol::alloc`).
#[global_allocator]
static ALLOCATOR: ReserveLargeAllocator = ReserveLargeAllocator;

/// Every flag is also a key of the TOML file given with --config; flags win.
#[derive(Debug, Default, Parser, Deserialize)]
#[command(name = "logd", version, about = "The Strata broker")]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct Flags {
    /// A TOML file with any of the settings below.
    #[arg(long, value_name = "FILE.toml")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// This broker's id [default: 1].
    #[arg(long, value_name = "N")]
    node_id: Option<i32>,
    /// Where partitions and the controller's Raft log live [default: ./data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address of a PLAINTEXT listener named PLAINTEXT, first among the
    /// listeners [default: 127.0.0.1:9092 when no --listener is given].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Address clients of --listen are told to connect to [default: the
    /// listen address].
    #[arg(long, value_name = "HOST:PORT")]
    advertise: Option<String>,
    /// A Kafka listener, repeatable: NAME=SCHEME://HOST:PORT with SCHEME
    /// plaintext, ssl, sasl_plaintext or sasl_ssl (NAME defaults to the
    /// scheme in capitals). Clients are told the other brokers' addresses
    /// on the listener they came in on.
    #[arg(long = "listener", value_name = "NAME=SCHEME://HOST:PORT")]
    #[serde(default)]
    listener: Vec<String>,
    /// Where clients of a listener are told to connect, repeatable:
    /// NAME=HOST:PORT [default: the listener's bound address].
    #[arg(long = "advertised-listener", value_name = "NAME=HOST:PORT")]
    #[serde(default)]
    advertised_listener: Vec<String>,
    /// The listener other brokers connect to (PLAINTEXT or SSL)
    /// [default: the first].
    #[arg(long, value_name = "NAME")]
    inter_broker_listener: Option<String>,
    /// The broker's TLS certificate chain (PEM), for SSL and SASL_SSL
    /// listeners and for connecting to other brokers over TLS. Re-read on
    /// SIGHUP.
    #[arg(long, value_name = "FILE.pem")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE.pem")]
    tls_key: Option<PathBuf>,
    /// CA certificates (PEM) that client certificates and other brokers'
    /// certificates are checked against [default: the system's].
    #[arg(long, value_name = "FILE.pem")]
    tls_ca: Option<PathBuf>,
    /// Whether clients of SSL listeners (other brokers among them) must
    /// present a certificate signed by --tls-ca: none, requested or
    /// required [default: none]. SASL_SSL listeners never ask for one.
    #[arg(long, value_name = "MODE")]
    tls_client_auth: Option<String>,
    /// SASL mechanisms offered on SASL listeners, comma-separated:
    /// SCRAM-SHA-512, SCRAM-SHA-256, PLAIN [default: the two SCRAM ones].
    #[arg(long, value_name = "LIST")]
    sasl_mechanisms: Option<String>,
    /// Allow PLAIN on SASL_PLAINTEXT listeners, where passwords travel in
    /// the clear [default: false].
    #[arg(long, value_name = "BOOL")]
    sasl_plain_without_tls: Option<bool>,
    /// Mutual TLS on the controller listener and on every broker's calls
    /// to it: only holders of a certificate signed by --tls-ca (brokers)
    /// get in. All brokers of a cluster must agree [default: false].
    #[arg(long, value_name = "BOOL")]
    controller_tls: Option<bool>,
    /// Serve /metrics over HTTPS with --tls-cert [default: false].
    #[arg(long, value_name = "BOOL")]
    metrics_tls: Option<bool>,
    /// Address of the controller listener, bound when this broker is a
    /// voter [default: its address in --controllers, else 127.0.0.1:9093].
    #[arg(long, value_name = "ADDR")]
    controller_listen: Option<SocketAddr>,
    /// Controller voters as ID@HOST:PORT,...; every broker of a cluster is
    /// given the same list [default: this broker alone].
    #[arg(long, value_name = "ID@HOST:PORT,...")]
    controllers: Option<String>,
    /// How often this broker heartbeats to the controller [default: 2000].
    #[arg(long, value_name = "MS")]
    broker_heartbeat_interval_ms: Option<u64>,
    /// The controller fences a broker silent for this long; a broker that
    /// could not heartbeat for this long stops leading [default: 9000].
    #[arg(long, value_name = "MS")]
    broker_session_timeout_ms: Option<u64>,
    /// Give leadership back to each partition's first replica once it can
    /// lead again [default: true].
    #[arg(long, value_name = "BOOL")]
    auto_leader_rebalance: Option<bool>,
    /// A follower not caught up for this long leaves the ISR [default: 30000].
    #[arg(long, value_name = "MS")]
    replica_lag_time_max_ms: Option<u64>,
    /// How often retention and compaction run over every partition
    /// [default: 30000].
    #[arg(long, value_name = "MS")]
    log_retention_check_interval_ms: Option<u64>,
    /// An idempotent producer idle this long is forgotten by each partition
    /// [default: 86400000].
    #[arg(long, value_name = "MS")]
    producer_id_expiration_ms: Option<u64>,
    /// Shortest session a consumer group member may ask for [default: 6000].
    #[arg(long, value_name = "MS")]
    group_min_session_timeout_ms: Option<i32>,
    /// Longest session a consumer group member may ask for [default: 1800000].
    #[arg(long, value_name = "MS")]
    group_max_session_timeout_ms: Option<i32>,
    /// How long an empty group's first rebalance waits for more members
    /// [default: 3000].
    #[arg(long, value_name = "MS")]
    group_initial_rebalance_delay_ms: Option<i64>,
    /// A consumer-protocol (KIP-848) member not heard from for this long is
    /// removed and its partitions reassigned [default: 45000].
    #[arg(long, value_name = "MS")]
    group_consumer_session_timeout_ms: Option<i32>,
    /// How often consumer-protocol members heartbeat, so how soon one
    /// learns of partitions handed to it [default: 5000].
    #[arg(long, value_name = "MS")]
    group_consumer_heartbeat_interval_ms: Option<i32>,
    /// How long an empty consumer group's committed offsets are kept
    /// [default: 10080, a week].
    #[arg(long, value_name = "MINUTES")]
    offsets_retention_minutes: Option<u64>,
    /// How often expired committed offsets are looked for [default: 600000].
    #[arg(long, value_name = "MS")]
    offsets_retention_check_interval_ms: Option<u64>,
    /// Longest transaction.timeout.ms a transactional producer may ask
    /// for [default: 900000].
    #[arg(long, value_name = "MS")]
    transaction_max_timeout_ms: Option<i32>,
    /// A transactional id with no transaction for this long is forgotten
    /// [default: 604800000, a week].
    #[arg(long, value_name = "MS")]
    transactional_id_expiration_ms: Option<i64>,
    /// Partitions of a topic created without a count [default: 1].
    #[arg(long, value_name = "N")]
    num_partitions: Option<u32>,
    /// Replicas of a topic created without a replication factor
    /// [default: 1].
    #[arg(long, value_name = "N")]
    default_replication_factor: Option<u16>,
    /// Create a topic that a client's Metadata request names and asks to
    /// create, with the two defaults above [default: false, unlike Kafka:
    /// a mistyped topic name is an error, not a new topic].
    #[arg(long, value_name = "BOOL")]
    auto_create_topics_enable: Option<bool>,
    /// Address for Prometheus `/metrics` [default: 127.0.0.1:9094].
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Log level or filter (also RUST_LOG) [default: info].
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
}

impl Flags {
    /// Fills what the command line left unset from `file`.
    fn or(self, file: Flags) -> Flags {
        Flags {
            config: self.config,
            node_id: self.node_id.or(file.node_id),
            data_dir: self.data_dir.or(file.data_dir),
            listen: self.listen.or(file.listen),
            advertise: self.advertise.or(file.advertise),
            listener: if self.listener.is_empty() {
                file.listener
            } else {
                self.listener
            },
            advertised_listener: if self.advertised_listener.is_empty() {
                file.advertised_listener
            } else {
                self.advertised_listener
            },
            inter_broker_listener: self.inter_broker_listener.or(file.inter_broker_listener),
            tls_cert: self.tls_cert.or(file.tls_cert),
            tls_key: self.tls_key.or(file.tls_key),
            tls_ca: self.tls_ca.or(file.tls_ca),
            tls_client_auth: self.tls_client_auth.or(file.tls_client_auth),
            sasl_mechanisms: self.sasl_mechanisms.or(file.sasl_mechanisms),
            sasl_plain_without_tls: self.sasl_plain_without_tls.or(file.sasl_plain_without_tls),
            controller_tls: self.controller_tls.or(file.controller_tls),
            metrics_tls: self.metrics_tls.or(file.metrics_tls),
            controller_listen: self.controller_listen.or(file.controller_listen),
            controllers: self.controllers.or(file.controllers),
            broker_heartbeat_interval_ms: self
                .broker_heartbeat_interval_ms
                .or(file.broker_heartbeat_interval_ms),
            broker_session_timeout_ms: self
                .broker_session_timeout_ms
                .or(file.broker_session_timeout_ms),
            auto_leader_rebalance: self.auto_leader_rebalance.or(file.auto_leader_rebalance),
            replica_lag_time_max_ms: self
                .replica_lag_time_max_ms
                .or(file.replica_lag_time_max_ms),
            log_retention_check_interval_ms: self
                .log_retention_check_interval_ms
                .or(file.log_retention_check_interval_ms),
            producer_id_expiration_ms: self
                .producer_id_expiration_ms
                .or(file.producer_id_expiration_ms),
            group_min_session_timeout_ms: self
                .group_min_session_timeout_ms
                .or(file.group_min_session_timeout_ms),
            group_max_session_timeout_ms: self
                .group_max_session_timeout_ms
                .or(file.group_max_session_timeout_ms),
            group_initial_rebalance_delay_ms: self
                .group_initial_rebalance_delay_ms
                .or(file.group_initial_rebalance_delay_ms),
            group_consumer_session_timeout_ms: self
                .group_consumer_session_timeout_ms
                .or(file.group_consumer_session_timeout_ms),
            group_consumer_heartbeat_interval_ms: self
                .group_consumer_heartbeat_interval_ms
                .or(file.group_consumer_heartbeat_interval_ms),
            offsets_retention_minutes: self
                .offsets_retention_minutes
                .or(file.offsets_retention_minutes),
            offsets_retention_check_interval_ms: self
                .offsets_retention_check_interval_ms
                .or(file.offsets_retention_check_interval_ms),
            transaction_max_timeout_ms: self
                .transaction_max_timeout_ms
                .or(file.transaction_max_timeout_ms),
            transactional_id_expiration_ms: self
                .transactional_id_expiration_ms
                .or(file.transactional_id_expiration_ms),
            num_partitions: self.num_partitions.or(file.num_partitions),
            default_replication_factor: self
                .default_replication_factor
                .or(file.default_replication_factor),
            auto_create_topics_enable: self
                .auto_create_topics_enable
                .or(file.auto_create_topics_enable),
            metrics_listen: self.metrics_listen.or(file.metrics_listen),
            log_level: self.log_level.or(file.log_level),
        }
    }
}

fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    let flags = match &flags.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?;
            let file: Flags = toml::from_str(&text)
                .with_context(|| format!("invalid config file {}", path.display()))?;
            flags.or(file)
        }
        None => flags,
    };
    let (spec, source) = match (&flags.log_level, std::env::var("RUST_LOG")) {
        (Some(level), _) => (level.clone(), "--log-level"),
        (None, Ok(filter)) => (filter, "RUST_LOG"),
        (None, Err(_)) => ("info".to_string(), "the default"),
    };
    let filter = EnvFilter::try_new(with_raft_chatter_quiet(&spec))
        .with_context(|| format!("invalid log filter '{spec}' from {source}"))?;
    // Colours only on a terminal: a log file stays greppable.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();

    let mut config = BrokerConfig::single_node(
        flags
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("data")),
    );
    config.node_id = flags.node_id.unwrap_or(config.node_id);
    config.listeners = listeners(&flags)?;
    config.inter_broker_listener = flags.inter_broker_listener.clone();
    config.security = security(&flags)?;
    config.metrics_listen = flags.metrics_listen.or(config.metrics_listen);
    if let Some(controllers) = &flags.controllers {
        config.controllers = parse_controllers(controllers)?;
    }
    config.controller_listen = match (flags.controller_listen, config.controllers.get(&config.node_id)) {
        (Some(address), _) => address,
        (None, Some(listed)) => listed.parse().with_context(|| {
            format!("--controllers lists this broker at '{listed}', which is not an IP:PORT to listen on; give --controller-listen")
        })?,
        (None, None) => config.controller_listen,
    };
    if let Some(ms) = flags.broker_heartbeat_interval_ms {
        config.broker_heartbeat_interval = Duration::from_millis(ms);
    }
    if let Some(ms) = flags.broker_session_timeout_ms {
        config.broker_session_timeout = Duration::from_millis(ms);
    }
    if config.broker_session_timeout <= config.broker_heartbeat_interval {
        bail!(
            "--broker-session-timeout-ms ({} ms) must be longer than --broker-heartbeat-interval-ms ({} ms)",
            config.broker_session_timeout.as_millis(),
            config.broker_heartbeat_interval.as_millis()
        );
    }
    config.auto_leader_rebalance = flags
        .auto_leader_rebalance
        .unwrap_or(config.auto_leader_rebalance);
    if let Some(ms) = flags.replica_lag_time_max_ms {
        config.replica_lag_time_max = Duration::from_millis(ms);
    }
    match flags.log_retention_check_interval_ms {
        Some(0) => bail!("--log-retention-check-interval-ms must be positive"),
        Some(ms) => config.retention_check_interval = Duration::from_millis(ms),
        None => {}
    }
    match flags.producer_id_expiration_ms {
        Some(0) => bail!("--producer-id-expiration-ms must be positive"),
        Some(ms) => config.producer_id_expiration = Duration::from_millis(ms),
        None => {}
    }
    let topics = &mut config.topics;
    match flags.num_partitions {
        Some(0) => bail!("--num-partitions must be at least 1"),
        Some(count) => topics.partitions = count,
        None => {}
    }
    match flags.default_replication_factor {
        Some(0) => bail!("--default-replication-factor must be at least 1"),
        Some(count) => topics.replication_factor = count,
        None => {}
    }
    topics.auto_create = flags
        .auto_create_topics_enable
        .unwrap_or(topics.auto_create);
    let group = &mut config.group;
    group.session_timeout_ms_min = flags
        .group_min_session_timeout_ms
        .unwrap_or(group.session_timeout_ms_min);
    group.session_timeout_ms_max = flags
        .group_max_session_timeout_ms
        .unwrap_or(group.session_timeout_ms_max);
    group.initial_rebalance_delay_ms = flags
        .group_initial_rebalance_delay_ms
        .unwrap_or(group.initial_rebalance_delay_ms);
    if group.session_timeout_ms_min <= 0
        || group.session_timeout_ms_min > group.session_timeout_ms_max
    {
        bail!(
            "--group-min-session-timeout-ms ({}) must be positive and at most --group-max-session-timeout-ms ({})",
            group.session_timeout_ms_min,
            group.session_timeout_ms_max
        );
    }
    group.consumer_session_timeout_ms = flags
        .group_consumer_session_timeout_ms
        .unwrap_or(group.consumer_session_timeout_ms);
    group.consumer_heartbeat_interval_ms = flags
        .group_consumer_heartbeat_interval_ms
        .unwrap_or(group.consumer_heartbeat_interval_ms);
    if group.consumer_heartbeat_interval_ms <= 0
        || group.consumer_heartbeat_interval_ms >= group.consumer_session_timeout_ms
    {
        bail!(
            "--group-consumer-heartbeat-interval-ms ({}) must be positive and below --group-consumer-session-timeout-ms ({})",
            group.consumer_heartbeat_interval_ms,
            group.consumer_session_timeout_ms
        );
    }
    match flags.offsets_retention_minutes {
        Some(0) => bail!("--offsets-retention-minutes must be positive"),
        Some(minutes) => group.offsets_retention_ms = (minutes as i64).saturating_mul(60_000),
        None => {}
    }
    match flags.offsets_retention_check_interval_ms {
        Some(0) => bail!("--offsets-retention-check-interval-ms must be positive"),
        Some(ms) => group.offsets_retention_check_interval_ms = ms as i64,
        None => {}
    }
    if group.initial_rebalance_delay_ms < 0 {
        bail!(
            "--group-initial-rebalance-delay-ms ({}) must not be negative",
            group.initial_rebalance_delay_ms
        );
    }
    match flags.transaction_max_timeout_ms {
        Some(ms) if ms <= 0 => bail!("--transaction-max-timeout-ms must be positive"),
        Some(ms) => config.txn.timeout_ms_max = ms,
        None => {}
    }
    match flags.transactional_id_expiration_ms {
        Some(ms) if ms <= 0 => bail!("--transactional-id-expiration-ms must be positive"),
        Some(ms) => config.txn.id_expiration_ms = ms,
        None => {}
    }

    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let broker = Broker::start(config)
            .await
            .context("cannot start the broker")?;
        wait_for_signal(&broker).await?;
        tracing::info!("shutting down");
        broker.shutdown().await;
        Ok(())
    })
}

/// Parses `ID@HOST:PORT,...`.
fn parse_controllers(list: &str) -> anyhow::Result<BTreeMap<i32, String>> {
    let mut voters = BTreeMap::new();
    for voter in list.split(',').map(str::trim) {
        let (id, address) = voter
            .split_once('@')
            .with_context(|| format!("--controllers: '{voter}' is not ID@HOST:PORT"))?;
        let id: i32 = id
            .parse()
            .with_context(|| format!("--controllers: '{id}' in '{voter}' is not a node id"))?;
        let port = address
            .rsplit_once(':')
            .map(|(_, port)| port.parse::<u16>());
        if !matches!(port, Some(Ok(_))) {
            bail!("--controllers: '{address}' in '{voter}' is not HOST:PORT");
        }
        if voters.insert(id, address.to_string()).is_some() {
            bail!("--controllers lists node {id} twice");
        }
    }
    Ok(voters)
}

/// Waits for SIGTERM or SIGINT; SIGHUP meanwhile re-reads the TLS files.
async fn wait_for_signal(broker: &Broker) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let mut hangup = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    loop {
        tokio::select! {
            _ = terminate.recv() => return Ok(()),
            _ = interrupt.recv() => return Ok(()),
            _ = hangup.recv() => match broker.reload_tls() {
                Ok(true) => tracing::info!("SIGHUP: TLS certificate, key and CA files re-read; new connections use them"),
                Ok(false) => tracing::info!("SIGHUP: no TLS settings to re-read"),
                Err(error) => tracing::error!(%error, "SIGHUP: cannot re-read the TLS files; the ones loaded before stay in use"),
            },
        }
    }
}

/// The listeners: the PLAINTEXT one of --listen and --advertise (also
/// when nothing else is given, at 127.0.0.1:9092), then those of
/// --listener, placed by --advertised-listener.
fn listeners(flags: &Flags) -> anyhow::Result<Vec<ListenerConfig>> {
    let mut listeners = Vec::new();
    if flags.listen.is_some() || flags.listener.is_empty() {
        let mut listener = ListenerConfig::plaintext(
            flags
                .listen
                .unwrap_or_else(|| "127.0.0.1:9092".parse().expect("valid address")),
        );
        listener.advertise = flags.advertise.clone();
        listeners.push(listener);
    } else if flags.advertise.is_some() {
        bail!("--advertise places the listener of --listen; for a --listener, use --advertised-listener NAME=HOST:PORT");
    }
    for spec in &flags.listener {
        listeners.push(parse_listener(spec)?);
    }
    for spec in &flags.advertised_listener {
        let (name, address) = spec
            .split_once('=')
            .with_context(|| format!("--advertised-listener '{spec}' is not NAME=HOST:PORT"))?;
        if !matches!(
            address
                .rsplit_once(':')
                .map(|(_, port)| port.parse::<u16>()),
            Some(Ok(_))
        ) {
            bail!("--advertised-listener '{spec}': '{address}' is not HOST:PORT");
        }
        let listener = listeners
            .iter_mut()
            .find(|listener| listener.name.eq_ignore_ascii_case(name))
            .with_context(|| format!("--advertised-listener '{spec}' names no listener"))?;
        listener.advertise = Some(address.to_string());
    }
    Ok(listeners)
}

/// Parses `NAME=SCHEME://HOST:PORT` (or `SCHEME://HOST:PORT`).
fn parse_listener(spec: &str) -> anyhow::Result<ListenerConfig> {
    let (name, url) = match spec.split_once('=') {
        Some((name, url)) => (Some(name), url),
        None => (None, spec),
    };
    let (scheme, address) = url
        .split_once("://")
        .with_context(|| format!("--listener '{spec}' is not NAME=SCHEME://HOST:PORT"))?;
    let security_protocol = SecurityProtocol::parse(scheme).with_context(|| {
        format!("--listener '{spec}': unknown scheme '{scheme}' (plaintext, ssl, sasl_plaintext or sasl_ssl)")
    })?;
    let name = match name {
        Some(name)
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') =>
        {
            bail!("--listener '{spec}': a listener name is letters, digits, '_' and '-'")
        }
        Some(name) => name.to_ascii_uppercase(),
        None => security_protocol.name().to_string(),
    };
    let address = address
        .to_socket_addrs()
        .with_context(|| format!("--listener '{spec}': '{address}' is not HOST:PORT"))?
        .next()
        .with_context(|| format!("--listener '{spec}': '{address}' resolves to no address"))?;
    Ok(ListenerConfig {
        name,
        security_protocol,
        address,
        advertise: None,
    })
}

/// TLS files and SASL settings.
fn security(flags: &Flags) -> anyhow::Result<SecurityConfig> {
    let tls = match (&flags.tls_cert, &flags.tls_key) {
        (Some(certificate), Some(private_key)) => Some(TlsConfig {
            certificate: certificate.clone(),
            private_key: private_key.clone(),
            ca: flags.tls_ca.clone(),
            client_auth: match flags
                .tls_client_auth
                .as_deref()
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                None | Some("none") => ClientAuth::None,
                Some("requested") => ClientAuth::Requested,
                Some("required") => ClientAuth::Required,
                Some(other) => {
                    bail!("--tls-client-auth '{other}' is not none, requested or required")
                }
            },
        }),
        (None, None) => {
            if flags.tls_ca.is_some() || flags.tls_client_auth.is_some() {
                bail!("--tls-ca and --tls-client-auth need --tls-cert and --tls-key");
            }
            None
        }
        _ => bail!("--tls-cert and --tls-key go together"),
    };
    let sasl_mechanisms = match &flags.sasl_mechanisms {
        None => Vec::new(),
        Some(list) => list
            .split(',')
            .map(str::trim)
            .map(|name| {
                Mechanism::parse(name).with_context(|| {
                    format!("--sasl-mechanisms: unknown mechanism '{name}' (SCRAM-SHA-512, SCRAM-SHA-256, PLAIN)")
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?,
    };
    Ok(SecurityConfig {
        tls,
        sasl_mechanisms,
        plain_without_tls: flags.sasl_plain_without_tls.unwrap_or(false),
        controller_tls: flags.controller_tls.unwrap_or(false),
        metrics_tls: flags.metrics_tls.unwrap_or(false),
    })
}

/// openraft logs every retry to an unreachable voter (about 8 lines a
/// second while one is down) and its whole state at start; the controller
/// logs quorum changes itself, once each. So openraft is silent unless the
/// filter asks for debug or trace, or names openraft.
fn with_raft_chatter_quiet(spec: &str) -> String {
    let verbose = ["debug", "trace", "openraft"]
        .iter()
        .any(|word| spec.to_ascii_lowercase().contains(word));
    if verbose {
        spec.to_string()
    } else {
        format!("{spec},openraft=off")
    }
}
