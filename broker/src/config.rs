//! Broker settings. `logd` fills them from flags and a TOML file; tests and
//! embedders build them directly.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Settings of one broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    pub node_id: i32,
    pub data_dir: PathBuf,
    /// Where Kafka clients connect; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The address clients are told to use; the bound listen address if unset.
    pub advertise: Option<String>,
    /// The controller listener (Raft between voters).
    pub controller_listen: SocketAddr,
    /// Prometheus `/metrics`; not served when unset.
    pub metrics_listen: Option<SocketAddr>,
}

impl BrokerConfig {
    /// The defaults `logd` runs with when given no flags.
    pub fn single_node(data_dir: impl Into<PathBuf>) -> Self {
        BrokerConfig {
            node_id: 1,
            data_dir: data_dir.into(),
            listen: "127.0.0.1:9092".parse().expect("valid address"),
            advertise: None,
            controller_listen: "127.0.0.1:9093".parse().expect("valid address"),
            metrics_listen: Some("127.0.0.1:9094".parse().expect("valid address")),
        }
    }
}
