//! The embedded `Broker`: the same code path as `logd`, started in-process on
//! port 0, shut down cleanly, restarted on the same data.

use std::net::SocketAddr;

use strata_broker::{Broker, BrokerConfig, BrokerError};
use strata_tests::{fetch_all, produce, Connection};

fn config(dir: &std::path::Path) -> BrokerConfig {
    let mut config = BrokerConfig::single_node(dir.join("data"));
    config.listeners = vec![strata_broker::config::ListenerConfig::plaintext(
        "127.0.0.1:0".parse().unwrap(),
    )];
    config.controller_listen = "127.0.0.1:0".parse().unwrap();
    config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    config
}

fn create_and_produce(address: SocketAddr) -> i64 {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::{ApiKey, CreateTopicsRequest, RequestKind, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let mut connection = Connection::open(address).unwrap();
    let topic = CreatableTopic::default()
        .with_name(TopicName(StrBytes::from_static_str("embedded")))
        .with_num_partitions(1)
        .with_replication_factor(1);
    let request =
        RequestKind::CreateTopics(CreateTopicsRequest::default().with_topics(vec![topic]));
    connection.send(ApiKey::CreateTopics, 5, &request).unwrap();
    produce(&mut connection, "embedded", 0, 1, &[b"kept".to_vec()])
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_broker_serves_shuts_down_and_restarts_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(config(dir.path())).await.unwrap();
    let address = broker.local_addr();
    assert_ne!(address.port(), 0, "port 0 picks a free port");

    let second = Broker::start(config(dir.path())).await;
    assert!(
        matches!(second, Err(BrokerError::DataDirLocked(_))),
        "one broker per data directory"
    );

    let offset = tokio::task::spawn_blocking(move || create_and_produce(address))
        .await
        .unwrap();
    assert_eq!(offset, 0);
    let metrics_addr = broker.metrics_addr().expect("metrics served");
    let metrics = tokio::task::spawn_blocking(move || http_get(metrics_addr, "/metrics"))
        .await
        .unwrap();
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        metrics.contains("strata_topic_records_in_total{topic=\"embedded\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("strata_request_latency_seconds_count{api=\"Produce\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("strata_raft_leader 1"), "{metrics}");
    broker.shutdown().await;

    let broker = Broker::start(config(dir.path())).await.unwrap();
    let address = broker.local_addr();
    let records = tokio::task::spawn_blocking(move || {
        fetch_all(&mut Connection::open(address).unwrap(), "embedded", 0)
    })
    .await
    .unwrap();
    assert_eq!(
        records,
        vec![(0, b"kept".to_vec())],
        "acks=1 data is flushed on clean shutdown"
    );
    broker.shutdown().await;
}

fn http_get(address: SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.set_nodelay(true).unwrap();
    // The request line arrives in pieces, as it may from any HTTP client.
    stream.write_all(b"GET ").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    write!(stream, "{path} HTTP/1.1\r\nhost: strata\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}
