//! Broker settings. `logd` fills them from flags and a TOML file; tests and
//! embedders build them directly.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use strata_protocol::sasl::Mechanism;

use crate::group::classic::GroupConfig;
use crate::txn::state::TxnConfig;

/// Settings of one broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    pub node_id: i32,
    pub data_dir: PathBuf,
    /// Where Kafka clients connect, each listener with its own security
    /// (Kafka's `listeners` and `advertised.listeners`). Names are unique.
    pub listeners: Vec<ListenerConfig>,
    /// The listener other brokers connect to (replica fetches, transaction
    /// markers); the first listener when unset. Plaintext or SSL.
    pub inter_broker_listener: Option<String>,
    /// TLS certificates, SASL mechanisms, super users.
    pub security: SecurityConfig,
    /// The controller listener (Raft between voters, brokers' calls to the
    /// controller); bound only by a voter.
    pub controller_listen: SocketAddr,
    /// The controller voters, id → controller address. Empty: this broker
    /// is the only voter, at `controller_listen`.
    pub controllers: BTreeMap<i32, String>,
    /// Prometheus `/metrics`; not served when unset.
    pub metrics_listen: Option<SocketAddr>,
    /// How often this broker heartbeats to the controller leader; also how
    /// stale its view of the quorum may get.
    pub broker_heartbeat_interval: Duration,
    /// The controller fences a broker silent for this long (used when this
    /// broker leads the controller quorum).
    pub broker_session_timeout: Duration,
    /// Move leadership back to each partition's first replica once it can
    /// lead again (used when this broker leads the controller quorum).
    pub auto_leader_rebalance: bool,
    /// A follower not caught up for this long leaves the ISR of a partition
    /// this broker leads (Kafka's `replica.lag.time.max.ms`).
    pub replica_lag_time_max: Duration,
    /// How often retention and compaction run over every partition
    /// (Kafka's `log.retention.check.interval.ms`).
    pub retention_check_interval: Duration,
    /// An idempotent producer whose newest batch in a partition is older
    /// is forgotten there at the next retention check (Kafka's
    /// `producer.id.expiration.ms`).
    pub producer_id_expiration: Duration,
    /// Consumer groups: session timeout bounds, the initial rebalance delay.
    pub group: GroupConfig,
    /// Transactions: the longest timeout, when idle ids expire.
    pub txn: TxnConfig,
    /// Topics created without a partition count or replication factor, and
    /// whether a Metadata request creates the topics it names.
    pub topics: TopicDefaults,
}

/// Kafka's `num.partitions`, `default.replication.factor` and
/// `auto.create.topics.enable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicDefaults {
    pub partitions: u32,
    pub replication_factor: u16,
    /// Off by default (Kafka's is on): a typo in a producer's topic name
    /// should be an error, not a new topic.
    pub auto_create: bool,
}

impl Default for TopicDefaults {
    fn default() -> Self {
        TopicDefaults {
            partitions: 1,
            replication_factor: 1,
            auto_create: false,
        }
    }
}

/// How a listener's connections are secured: Kafka's security protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    /// The protocol a listener scheme names (`plaintext`, `ssl`,
    /// `sasl_plaintext`, `sasl_ssl`, any case).
    pub fn parse(scheme: &str) -> Option<SecurityProtocol> {
        match scheme.to_ascii_lowercase().as_str() {
            "plaintext" => Some(SecurityProtocol::Plaintext),
            "ssl" => Some(SecurityProtocol::Ssl),
            "sasl_plaintext" => Some(SecurityProtocol::SaslPlaintext),
            "sasl_ssl" => Some(SecurityProtocol::SaslSsl),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    pub fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// One Kafka listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    /// Its name (`PLAINTEXT`, `INTERNAL`, `EXTERNAL`, ...): clients that
    /// connect here are told the other brokers' addresses on the listener
    /// of the same name.
    pub name: String,
    pub security_protocol: SecurityProtocol,
    /// Where it binds; port 0 picks a free port.
    pub address: SocketAddr,
    /// `host:port` clients are told to use; the bound address if unset.
    pub advertise: Option<String>,
}

impl ListenerConfig {
    /// A plaintext listener named `PLAINTEXT`.
    pub fn plaintext(address: SocketAddr) -> ListenerConfig {
        ListenerConfig {
            name: "PLAINTEXT".to_string(),
            security_protocol: SecurityProtocol::Plaintext,
            address,
            advertise: None,
        }
    }
}

/// Who must prove what on the broker's listeners.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityConfig {
    /// The broker's certificate and key, for its TLS listeners; required
    /// when any listener uses TLS.
    pub tls: Option<TlsConfig>,
    /// SASL mechanisms offered on SASL listeners; empty means the SCRAM
    /// ones. PLAIN on a listener without TLS sends passwords in the clear,
    /// and is refused there unless `plain_without_tls` says otherwise.
    pub sasl_mechanisms: Vec<Mechanism>,
    pub plain_without_tls: bool,
    /// The controller listener, and every broker's calls to it, use TLS
    /// with certificates on both ends (signed by the CA of `tls`), so only
    /// brokers reach the controller.
    pub controller_tls: bool,
    /// `/metrics` is served over TLS (HTTPS).
    pub metrics_tls: bool,
}

/// Certificates and keys, as PEM files (re-read on [`crate::Broker::reload_tls`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// The broker's certificate chain, leaf first.
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    /// CAs that sign client certificates (mutual TLS) and other brokers'
    /// certificates; the system's CAs when unset.
    pub ca: Option<PathBuf>,
    pub client_auth: ClientAuth,
}

/// Whether clients of SSL listeners must present a certificate (Kafka's
/// `ssl.client.auth`). SASL_SSL listeners never ask: SASL says who the
/// client is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    #[default]
    None,
    /// Asked for, and checked against the CA when given.
    Requested,
    Required,
}

impl BrokerConfig {
    /// The defaults `logd` runs with when given no flags.
    pub fn single_node(data_dir: impl Into<PathBuf>) -> Self {
        BrokerConfig {
            node_id: 1,
            data_dir: data_dir.into(),
            listeners: vec![ListenerConfig::plaintext(
                "127.0.0.1:9092".parse().expect("valid address"),
            )],
            inter_broker_listener: None,
            security: SecurityConfig::default(),
            controller_listen: "127.0.0.1:9093".parse().expect("valid address"),
            controllers: BTreeMap::new(),
            metrics_listen: Some("127.0.0.1:9094".parse().expect("valid address")),
            broker_heartbeat_interval: Duration::from_millis(2_000),
            broker_session_timeout: Duration::from_millis(9_000),
            auto_leader_rebalance: true,
            replica_lag_time_max: Duration::from_millis(30_000),
            retention_check_interval: Duration::from_millis(30_000),
            producer_id_expiration: Duration::from_millis(24 * 60 * 60 * 1000),
            group: GroupConfig::default(),
            txn: TxnConfig::default(),
            topics: TopicDefaults::default(),
        }
    }
}
