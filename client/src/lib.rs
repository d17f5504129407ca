//! Strata's pure-Rust client: [`Admin`], [`Producer`] and [`Consumer`],
//! speaking the Kafka protocol (so they work against Kafka brokers too).
//!
//! Every type is built from a bootstrap list (`"host:port,host:port"`), keeps
//! a metadata cache and one pipelined connection per broker, and refreshes
//! metadata when a broker says it does not lead a partition.
//!
//! ```no_run
//! # async fn run() -> Result<(), strata_client::Error> {
//! use std::time::Duration;
//! use strata_client::{Admin, Consumer, NewTopic, Offset, Producer, ProducerRecord};
//!
//! let admin = Admin::connect("127.0.0.1:9092").await?;
//! admin.create_topic(&NewTopic::new("greetings", 1, 1)).await?;
//!
//! let producer = Producer::builder("127.0.0.1:9092").build().await?;
//! let delivery = producer.send(ProducerRecord::new("greetings").value(b"hello")).await?;
//! let offset = delivery.await?.offset;
//!
//! let mut consumer = Consumer::builder("127.0.0.1:9092").build().await?;
//! consumer.assign(&[("greetings", 0)]).await?;
//! consumer.seek("greetings", 0, Offset::Beginning)?;
//! let records = consumer.poll(Duration::from_secs(1)).await?;
//! assert_eq!(Some(records[0].offset), offset);
//! # Ok(())
//! # }
//! ```

mod admin;
mod cluster;
mod connection;
mod consumer;
mod error;
pub mod partitioner;
mod producer;

pub use admin::{
    Admin, ClusterBroker, ClusterDescription, ConfigEntry, NewTopic, PartitionOffsets,
    TopicDescription,
};
pub use cluster::{BrokerInfo, ClientConfig, PartitionInfo, TopicInfo};
pub use consumer::{
    Consumer, ConsumerBuilder, ConsumerConfig, ConsumerRecord, Offset, OffsetReset,
};
pub use error::{Error, Result};
pub use kafka_protocol::error::ResponseError;
pub use producer::{
    Acks, Delivery, Producer, ProducerBuilder, ProducerConfig, ProducerRecord, RecordMetadata,
};
pub use strata_protocol::batch::Compression;
pub use strata_protocol::record::Header;
