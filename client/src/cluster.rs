//! What the client knows about the cluster: the brokers, each topic's
//! partitions and leaders (from Metadata), and one connection per broker.
//!
//! Metadata is refreshed on demand: when a topic is first used, and when a
//! broker answers that it does not lead a partition or does not know a topic.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{ApiKey, BrokerId, ListOffsetsRequest, MetadataRequest, TopicName};
use kafka_protocol::protocol::Request;
use kafka_protocol::protocol::StrBytes;
use strata_protocol::exchange;
pub use strata_protocol::sasl::Mechanism as SaslMechanism;
use strata_protocol::transport;
use tokio::sync::Mutex;

use crate::connection::Connection;
use crate::consumer::Isolation;
use crate::error::{Error, Result};

/// The broker a call goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// Any broker (the bootstrap connection): cluster-wide requests.
    Any,
    Broker(i32),
}

/// A broker's answer to one call, with where it came from.
#[derive(Debug)]
pub(crate) struct Answer<T> {
    pub(crate) response: T,
    api: ApiKey,
    address: String,
}

impl<T> Answer<T> {
    /// The first of `results` (calls about one thing get one), or an error
    /// naming the broker whose answer had none.
    pub(crate) fn first<'a, I>(&self, results: &'a [I]) -> Result<&'a I> {
        results.first().ok_or_else(|| Error::Protocol {
            address: self.address.clone(),
            reason: format!("{:?} response without a result", self.api),
        })
    }
}

/// Settings every client type shares.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `host:port` addresses tried in order until one answers.
    pub bootstrap: Vec<String>,
    pub client_id: String,
    pub connect_timeout: Duration,
    /// How long one request may wait for its response.
    pub request_timeout: Duration,
    /// TLS and SASL; none by default (Kafka's `PLAINTEXT`).
    pub security: Security,
}

/// How connections are secured: Kafka's `security.protocol` is `PLAINTEXT`
/// with neither, `SSL` with `tls`, `SASL_PLAINTEXT` with `sasl`, `SASL_SSL`
/// with both.
#[derive(Debug, Clone, Default)]
pub struct Security {
    pub tls: Option<TlsSettings>,
    pub sasl: Option<SaslSettings>,
}

/// TLS settings (PEM files).
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    /// CA certificates the broker's certificate is checked against; the
    /// system's when unset.
    pub ca_file: Option<PathBuf>,
    /// A certificate and key to present when the broker asks (mutual TLS).
    pub certificate: Option<PathBuf>,
    pub private_key: Option<PathBuf>,
}

/// SASL credentials.
#[derive(Clone)]
pub struct SaslSettings {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for SaslSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslSettings")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// [`Security`] made ready to connect with: certificate files read once.
pub(crate) struct Transport {
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
    pub(crate) sasl: Option<SaslSettings>,
}

impl Transport {
    fn new(security: &Security) -> Result<Transport> {
        let tls = match &security.tls {
            None => None,
            Some(settings) => {
                let identity = match (&settings.certificate, &settings.private_key) {
                    (Some(certificate), Some(key)) => Some((certificate.as_path(), key.as_path())),
                    (None, None) => None,
                    _ => {
                        return Err(Error::Config(
                            "a TLS client certificate and its private key go together".to_string(),
                        ))
                    }
                };
                let config = transport::client_config(settings.ca_file.as_deref(), identity)
                    .map_err(|error| Error::Config(format!("TLS settings: {error}")))?;
                Some(config)
            }
        };
        Ok(Transport {
            tls,
            sasl: security.sasl.clone(),
        })
    }
}

impl ClientConfig {
    /// `bootstrap` is a comma-separated list of `host:port`; a host without
    /// a port means Kafka's port, 9092.
    pub fn new(bootstrap: &str) -> ClientConfig {
        ClientConfig {
            bootstrap: bootstrap
                .split(',')
                .map(str::trim)
                .filter(|address| !address.is_empty())
                .map(with_default_port)
                .collect(),
            client_id: "strata-client".to_string(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            security: Security::default(),
        }
    }
}

/// `address` with `:9092` appended when it names no port (`host`,
/// `1.2.3.4`, `[::1]`; a bare IPv6 address has more than one colon).
fn with_default_port(address: &str) -> String {
    let colons = address.matches(':').count();
    if address.starts_with('[') {
        if address.contains("]:") {
            address.to_string()
        } else {
            format!("{address}:9092")
        }
    } else if colons == 0 {
        format!("{address}:9092")
    } else if colons == 1 {
        address.to_string()
    } else {
        format!("[{address}]:9092")
    }
}

/// One partition as the cluster describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: i32,
    /// `None` while the partition has no leader.
    pub leader: Option<i32>,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

/// One topic as the cluster describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub topic_id: String,
    pub internal: bool,
    pub partitions: Vec<PartitionInfo>,
}

/// One broker as the cluster describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    pub id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

impl BrokerInfo {
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

#[derive(Debug, Default)]
struct Metadata {
    brokers: HashMap<i32, BrokerInfo>,
    topics: HashMap<String, Arc<TopicInfo>>,
}

pub(crate) struct Cluster {
    config: ClientConfig,
    transport: Transport,
    metadata: RwLock<Metadata>,
    connections: Mutex<HashMap<i32, Arc<Connection>>>,
    bootstrap: Mutex<Option<Arc<Connection>>>,
}

impl Cluster {
    /// Connects to the first bootstrap broker that answers.
    pub(crate) async fn connect(config: ClientConfig) -> Result<Arc<Cluster>> {
        if config.bootstrap.is_empty() {
            return Err(Error::Config("no bootstrap broker given".to_string()));
        }
        let transport = Transport::new(&config.security)?;
        let cluster = Arc::new(Cluster {
            config,
            transport,
            metadata: RwLock::new(Metadata::default()),
            connections: Mutex::new(HashMap::new()),
            bootstrap: Mutex::new(None),
        });
        cluster.any_connection().await?;
        Ok(cluster)
    }

    pub(crate) fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// A connection to any broker: the last one used for metadata, else the
    /// first bootstrap or known broker that answers.
    pub(crate) async fn any_connection(&self) -> Result<Arc<Connection>> {
        let mut bootstrap = self.bootstrap.lock().await;
        if let Some(connection) = bootstrap.as_ref().filter(|c| !c.is_closed()) {
            return Ok(Arc::clone(connection));
        }
        let known: Vec<String> = {
            let metadata = self.metadata.read().expect("metadata");
            metadata.brokers.values().map(BrokerInfo::address).collect()
        };
        let mut last_error = None;
        for address in self.config.bootstrap.iter().chain(known.iter()) {
            let opened = Connection::open(
                address,
                &self.config.client_id,
                self.config.connect_timeout,
                &self.transport,
            );
            match opened.await {
                Ok(connection) => {
                    let connection = Arc::new(connection);
                    *bootstrap = Some(Arc::clone(&connection));
                    return Ok(connection);
                }
                Err(error) => last_error = Some(error),
            }
        }
        Err(Error::Unreachable {
            bootstrap: self.config.bootstrap.join(","),
            source: Arc::new(last_error.expect("at least one address was tried")),
        })
    }

    /// The connection to broker `id`, opened on first use and reopened after
    /// a failure.
    pub(crate) async fn connection(&self, id: i32) -> Result<Arc<Connection>> {
        let mut connections = self.connections.lock().await;
        if let Some(connection) = connections.get(&id).filter(|c| !c.is_closed()) {
            return Ok(Arc::clone(connection));
        }
        let address = self
            .metadata
            .read()
            .expect("metadata")
            .brokers
            .get(&id)
            .map(BrokerInfo::address);
        let Some(address) = address else {
            drop(connections);
            self.refresh(&[]).await?;
            return Box::pin(self.connection_known(id)).await;
        };
        let connection = Connection::open(
            &address,
            &self.config.client_id,
            self.config.connect_timeout,
            &self.transport,
        )
        .await
        .map_err(|source| Error::Io {
            address: address.clone(),
            source: Arc::new(source),
        })?;
        let connection = Arc::new(connection);
        connections.insert(id, Arc::clone(&connection));
        Ok(connection)
    }

    async fn connection_known(&self, id: i32) -> Result<Arc<Connection>> {
        if !self
            .metadata
            .read()
            .expect("metadata")
            .brokers
            .contains_key(&id)
        {
            return Err(Error::Protocol {
                address: self.config.bootstrap.join(","),
                reason: format!("broker {id} is not in the cluster metadata"),
            });
        }
        self.connection(id).await
    }

    /// Fetches metadata for `topics` (all topics when empty) and caches it.
    /// Topics the cluster does not know are dropped from the cache.
    pub(crate) async fn refresh(&self, topics: &[&str]) -> Result<Vec<Result<Arc<TopicInfo>>>> {
        let connection = self.any_connection().await?;
        let request = MetadataRequest::default()
            .with_topics(if topics.is_empty() {
                None
            } else {
                Some(
                    topics
                        .iter()
                        .map(|name| {
                            MetadataRequestTopic::default()
                                .with_name(Some(TopicName(StrBytes::from_string(name.to_string()))))
                        })
                        .collect(),
                )
            })
            .with_allow_auto_topic_creation(false);
        let response = match self.call_on(&connection, &request).await {
            Ok(answer) => answer.response,
            Err(error) => {
                self.bootstrap.lock().await.take();
                return Err(error);
            }
        };
        let mut metadata = self.metadata.write().expect("metadata");
        metadata.brokers = response
            .brokers
            .iter()
            .map(|broker| {
                let info = BrokerInfo {
                    id: broker.node_id.0,
                    host: broker.host.to_string(),
                    port: broker.port,
                    rack: broker.rack.as_ref().map(ToString::to_string),
                };
                (info.id, info)
            })
            .collect();
        let mut results = Vec::with_capacity(response.topics.len());
        for topic in response.topics {
            let name = topic
                .name
                .map(|name| name.0.to_string())
                .unwrap_or_default();
            if topic.error_code != 0 {
                metadata.topics.remove(&name);
                results.push(Err(
                    if topic.error_code
                        == kafka_protocol::error::ResponseError::UnknownTopicOrPartition.code()
                    {
                        Error::UnknownTopic(name)
                    } else {
                        Error::broker(
                            format!("metadata of topic {name:?}"),
                            topic.error_code,
                            None,
                        )
                    },
                ));
                continue;
            }
            let mut partitions: Vec<PartitionInfo> = topic
                .partitions
                .iter()
                .map(|partition| PartitionInfo {
                    partition: partition.partition_index,
                    leader: (partition.leader_id.0 >= 0 && partition.error_code == 0)
                        .then_some(partition.leader_id.0),
                    leader_epoch: partition.leader_epoch,
                    replicas: partition.replica_nodes.iter().map(|id| id.0).collect(),
                    isr: partition.isr_nodes.iter().map(|id| id.0).collect(),
                })
                .collect();
            partitions.sort_by_key(|partition| partition.partition);
            let info = Arc::new(TopicInfo {
                name: name.clone(),
                topic_id: topic.topic_id.to_string(),
                internal: topic.is_internal,
                partitions,
            });
            metadata.topics.insert(name, Arc::clone(&info));
            results.push(Ok(info));
        }
        Ok(results)
    }

    /// The cached description of `topic`, fetched when not cached.
    pub(crate) async fn topic(&self, topic: &str) -> Result<Arc<TopicInfo>> {
        if let Some(info) = self.cached_topic(topic) {
            return Ok(info);
        }
        self.refresh(&[topic])
            .await?
            .into_iter()
            .next()
            .unwrap_or_else(|| Err(Error::UnknownTopic(topic.to_string())))
    }

    pub(crate) fn cached_topic(&self, topic: &str) -> Option<Arc<TopicInfo>> {
        self.metadata
            .read()
            .expect("metadata")
            .topics
            .get(topic)
            .cloned()
    }

    /// Every broker the cached metadata lists.
    pub(crate) fn broker_ids(&self) -> Vec<i32> {
        let mut ids: Vec<i32> = self
            .metadata
            .read()
            .expect("metadata")
            .brokers
            .keys()
            .copied()
            .collect();
        ids.sort_unstable();
        ids
    }

    /// The leader of `topic`/`partition` from the cache.
    pub(crate) fn leader(&self, topic: &str, partition: i32) -> Option<i32> {
        self.cached_topic(topic)?
            .partitions
            .get(partition as usize)
            .and_then(|info| info.leader)
    }

    /// Runs `request` under the configured request timeout.
    /// Sends `request` to `target` and waits for the answer, at most the
    /// request timeout: the one path of every admin call.
    pub(crate) async fn call<R: Request>(
        &self,
        target: Target,
        request: &R,
    ) -> Result<Answer<R::Response>> {
        let connection = match target {
            Target::Any => self.any_connection().await?,
            Target::Broker(id) => self.connection(id).await?,
        };
        self.call_on(&connection, request).await
    }

    /// [`Cluster::call`] on a connection the caller already holds (to look
    /// at the versions it negotiated first).
    pub(crate) async fn call_on<R: Request>(
        &self,
        connection: &Connection,
        request: &R,
    ) -> Result<Answer<R::Response>> {
        let api = exchange::api_key::<R>();
        let after = self.config.request_timeout;
        let response = tokio::time::timeout(after, connection.send(request))
            .await
            .map_err(|_elapsed| Error::Timeout {
                operation: format!("{api:?}"),
                after,
            })??;
        Ok(Answer {
            response,
            api,
            address: connection.address().to_string(),
        })
    }

    pub(crate) async fn timed<T>(
        &self,
        operation: &'static str,
        request: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let after = self.config.request_timeout;
        tokio::time::timeout(after, request)
            .await
            .map_err(|_elapsed| Error::Timeout {
                operation: operation.to_string(),
                after,
            })?
    }

    /// Asks `leader` for the offset of `topic-partition` at `timestamp`
    /// (ListOffsets: -2 is the log start, -1 the high watermark, or the
    /// last stable offset for a `read_committed` reader).
    pub(crate) async fn list_offset(
        &self,
        leader: i32,
        topic: &str,
        partition: i32,
        timestamp: i64,
        isolation: Isolation,
    ) -> Result<i64> {
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_isolation_level(isolation.wire())
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(partition)
                    .with_current_leader_epoch(-1)
                    .with_timestamp(timestamp)])]);
        let answer = self.call(Target::Broker(leader), &request).await?;
        let topic_answer = answer.first(&answer.response.topics)?;
        let result = answer.first(&topic_answer.partitions)?;
        crate::error::check(
            || format!("list offsets of {topic}-{partition}"),
            result.error_code,
            None,
        )?;
        Ok(result.offset)
    }
}

pub(crate) fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_without_a_port_means_9092() {
        let config = ClientConfig::new("localhost, 10.0.0.7:19092,[::1]:9093,[::1],::1,broker-2:x");
        assert_eq!(
            config.bootstrap,
            [
                "localhost:9092",
                "10.0.0.7:19092",
                "[::1]:9093",
                "[::1]:9092",
                "[::1]:9092",
                "broker-2:x"
            ]
        );
    }
}
