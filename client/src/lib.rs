//! Strata's pure-Rust client: [`Admin`], [`Producer`] and [`Consumer`],
//! speaking the Kafka protocol (so they work against Kafka brokers too).
//!
//! Every type is built from a bootstrap list (`"host:port,host:port"`), keeps
//! a metadata cache and one pipelined connection per broker, and refreshes
//! metadata when a broker says it does not lead a partition.
//!
//! ```
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # // A broker of our own for the example to run against.
//! # let dir = tempfile::tempdir()?;
//! # let mut config = strata_broker::BrokerConfig::single_node(dir.path().join("data"));
//! # config.listeners = vec![strata_broker::config::ListenerConfig::plaintext("127.0.0.1:0".parse()?)];
//! # config.controller_listen = "127.0.0.1:0".parse()?;
//! # let broker = strata_broker::Broker::start(config).await?;
//! # let bootstrap = broker.local_addr().to_string();
//! use std::time::Duration;
//! use strata_client::{Admin, Consumer, NewTopic, Offset, Producer, ProducerRecord};
//!
//! // `bootstrap` is "host:port" of any broker, e.g. "127.0.0.1:9092".
//! let admin = Admin::connect(&bootstrap).await?;
//! admin.create_topic(&NewTopic::new("greetings", 1, 1)).await?;
//! admin.wait_for_leaders("greetings", Duration::from_secs(10)).await?;
//!
//! let producer = Producer::builder(&bootstrap).build().await?;
//! let delivery = producer.send(ProducerRecord::new("greetings").value(b"hello")).await?;
//! let offset = delivery.await?.offset;
//!
//! let mut consumer = Consumer::builder(&bootstrap).build().await?;
//! consumer.assign(&[("greetings", 0)]).await?;
//! consumer.seek("greetings", 0, Offset::Beginning)?;
//! let records = consumer.poll(Duration::from_secs(5)).await?;
//! assert_eq!(Some(records[0].offset), offset);
//! assert_eq!(records[0].value.as_deref(), Some(&b"hello"[..]));
//! # broker.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod admin;
pub mod assignor;
mod cluster;
mod connect;
mod connection;
mod consumer;
mod error;
mod group;
pub mod partitioner;
mod producer;
pub mod saga;

pub use admin::{
    Admin, ClusterBroker, ClusterDescription, ConfigEntry, Election, ElectionOutcome,
    GroupDescription, GroupListing, GroupMember, LogDir, NewTopic, PartitionOffsets,
    PartitionReassignment, ProducerDescription, QuorumDescription, TopicDescription,
    TransactionDescription, TransactionListing, TransactionPartition, UserDescription,
};
pub use assignor::Assignor;
pub use cluster::{
    BrokerInfo, ClientConfig, PartitionInfo, SaslMechanism, SaslSettings, Security, TlsSettings,
    TopicInfo,
};
pub use connect::ConnectOptions;
pub use consumer::{
    Consumer, ConsumerBuilder, ConsumerConfig, ConsumerRecord, Isolation, Offset, OffsetReset,
    Rebalance,
};
pub use error::{Error, Result};
pub use group::GroupConfig;
pub use kafka_protocol::error::ResponseError;
pub use producer::{
    Acks, Delivery, GroupMetadata, Producer, ProducerBuilder, ProducerConfig, ProducerRecord,
    RecordMetadata,
};
pub use strata_protocol::batch::Compression;
pub use strata_protocol::record::Header;
pub use strata_protocol::sasl::ScramMechanism;
