//! Security as a user meets it: TLS listeners and SASL/SCRAM with Strata's
//! client and kafka-python on a cluster whose brokers talk TLS to each
//! other; clients on the wrong side of TLS; failed and missing logins; a
//! crowd of strangers that must not cost the broker memory; certificates
//! re-read on SIGHUP.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use strata_client::{
    Acks, Admin, ClientConfig, Consumer, NewTopic, Offset, Producer, ProducerRecord, SaslMechanism,
    SaslSettings, ScramMechanism, Security, TlsSettings,
};
use strata_tests::certificates::Certificates;
use strata_tests::{free_port, logd_binary, python, wait_for, Cluster, Connection, Logd};

const USER: &str = "alice";
const PASSWORD: &str = "alice-secret";

fn tls(ca: &Path) -> TlsSettings {
    TlsSettings {
        ca_file: Some(ca.to_path_buf()),
        ..TlsSettings::default()
    }
}

fn sasl(mechanism: SaslMechanism, password: &str) -> SaslSettings {
    SaslSettings {
        mechanism,
        username: USER.to_string(),
        password: password.to_string(),
    }
}

fn config(bootstrap: &str, security: Security) -> ClientConfig {
    let mut config = ClientConfig::new(bootstrap);
    config.security = security;
    config
}

/// Alice, with both SCRAM credentials, created over the plaintext
/// listener an operator keeps on loopback.
async fn create_alice(plaintext: &str) {
    let admin = Admin::connect(plaintext).await.unwrap();
    for mechanism in [ScramMechanism::Sha256, ScramMechanism::Sha512] {
        admin
            .upsert_scram_credential(USER, mechanism, PASSWORD, 4096)
            .await
            .unwrap();
    }
}

/// Creates `topic` as the client of `security` and waits for its leaders;
/// the client's admin.
async fn create_topic(
    bootstrap: &str,
    security: &Security,
    topic: &str,
    partitions: i32,
    replication_factor: i16,
) -> Admin {
    let admin = Admin::with_config(config(bootstrap, security.clone()))
        .await
        .unwrap();
    admin
        .create_topic(&NewTopic::new(topic, partitions, replication_factor))
        .await
        .unwrap();
    admin
        .wait_for_leaders(topic, Duration::from_secs(20))
        .await
        .unwrap();
    admin
}

/// Produces `PREFIX-0` .. `PREFIX-{count-1}` with acks=all as the client
/// of `security`, every one acknowledged.
async fn produce(bootstrap: &str, security: &Security, topic: &str, prefix: &str, count: usize) {
    let producer = Producer::builder(bootstrap)
        .security(security.clone())
        .acks(Acks::All)
        .build()
        .await
        .unwrap();
    let mut deliveries = Vec::with_capacity(count);
    for index in 0..count {
        let value = format!("{prefix}-{index}");
        let record = ProducerRecord::new(topic).value(value.as_bytes());
        deliveries.push(producer.send(record).await.unwrap());
    }
    for delivery in deliveries {
        delivery.await.unwrap();
    }
}

/// `--listener NAME=SCHEME://127.0.0.1:PORT`.
fn listener(name: &str, scheme: &str, port: u16) -> [String; 2] {
    [
        "--listener".to_string(),
        format!("{name}={scheme}://127.0.0.1:{port}"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_produce_and_consume_over_sasl_ssl_on_a_cluster_whose_brokers_talk_tls() {
    let _cluster_slot = strata_tests::one_cluster_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let certificates = Certificates::create(dir.path(), "", "Strata test CA");
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let cluster = Cluster::start_with_node_args(3, |id| {
        let (internal, external) = ports[id as usize - 1];
        let mut args: Vec<String> = [
            listener("INTERNAL", "ssl", internal),
            listener("EXTERNAL", "sasl_ssl", external),
        ]
        .concat();
        args.extend([
            "--inter-broker-listener".into(),
            "INTERNAL".into(),
            "--tls-client-auth".into(),
            "required".into(),
            "--controller-tls".into(),
            "true".into(),
            "--metrics-tls".into(),
            "true".into(),
        ]);
        args.extend(certificates.broker_flags());
        args
    });
    create_alice(&cluster.bootstrap()).await;
    let external: Vec<String> = ports
        .iter()
        .map(|(_, port)| format!("127.0.0.1:{port}"))
        .collect();
    let bootstrap = external.join(",");
    let security = Security {
        tls: Some(tls(&certificates.ca)),
        sasl: Some(sasl(SaslMechanism::Scram(ScramMechanism::Sha512), PASSWORD)),
    };
    // INTERNAL (SSL) requires a certificate signed by the CA, as the
    // brokers present to each other; EXTERNAL (SASL_SSL) asks for none.
    let internal = format!("127.0.0.1:{}", ports[0].0);
    let without_certificate = Security {
        tls: Some(tls(&certificates.ca)),
        sasl: None,
    };
    assert!(Admin::with_config(config(&internal, without_certificate))
        .await
        .is_err());
    let with_certificate = Security {
        tls: Some(TlsSettings {
            certificate: Some(certificates.client_certificate.clone()),
            private_key: Some(certificates.client_key.clone()),
            ..tls(&certificates.ca)
        }),
        sasl: None,
    };
    Admin::with_config(config(&internal, with_certificate))
        .await
        .unwrap()
        .list_topics()
        .await
        .unwrap();
    let admin = create_topic(&bootstrap, &security, "secure", 3, 3).await;
    // Clients of EXTERNAL are told the brokers' EXTERNAL addresses.
    let described = admin.describe_cluster().await.unwrap();
    let mut told: Vec<String> = described
        .brokers
        .iter()
        .map(|broker| format!("{}:{}", broker.host, broker.port))
        .collect();
    told.sort();
    let mut expected = external.clone();
    expected.sort();
    assert_eq!(told, expected);

    produce(&bootstrap, &security, "secure", "strata", 300).await;

    // kafka-python, on its defaults but for the security settings.
    let script = r#"
import sys
from kafka import KafkaProducer, KafkaConsumer
bootstrap, ca, user, password = sys.argv[1:5]
common = dict(bootstrap_servers=bootstrap.split(","), security_protocol="SASL_SSL", ssl_cafile=ca,
              sasl_mechanism="SCRAM-SHA-512", sasl_plain_username=user, sasl_plain_password=password)
producer = KafkaProducer(acks="all", **common)
for i in range(300):
    producer.send("secure", f"python-{i}".encode())
producer.flush(30)
consumer = KafkaConsumer("secure", group_id="secure-readers", auto_offset_reset="earliest",
                         consumer_timeout_ms=10000, **common)
seen = set()
for message in consumer:
    seen.add(message.value.decode())
    if len(seen) == 600:
        break
print(len(seen))
"#;
    let args = [
        bootstrap.clone(),
        certificates.ca.display().to_string(),
        USER.to_string(),
        PASSWORD.to_string(),
    ];
    let counted = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        python(script, &args)
    })
    .await
    .unwrap();
    assert_eq!(counted.trim(), "600", "kafka-python read every record");

    // Strata's consumer reads both producers' records back.
    let mut consumer = Consumer::builder(&bootstrap)
        .security(security.clone())
        .build()
        .await
        .unwrap();
    let partitions: Vec<(&str, i32)> = (0..3).map(|partition| ("secure", partition)).collect();
    consumer.assign(&partitions).await.unwrap();
    for partition in 0..3 {
        consumer
            .seek("secure", partition, Offset::Beginning)
            .unwrap();
    }
    let mut values = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while values.len() < 600 && Instant::now() < deadline {
        for record in consumer.poll(Duration::from_millis(500)).await.unwrap() {
            values.insert(String::from_utf8(record.value.unwrap().to_vec()).unwrap());
        }
    }
    assert_eq!(values.len(), 600);
    assert!(values.contains("strata-299") && values.contains("python-299"));

    // Followers copy over the TLS inter-broker listener: every replica is
    // in sync.
    let isr_full = || async {
        let description = admin.describe_topic("secure").await.unwrap();
        description
            .topic
            .partitions
            .iter()
            .all(|partition| partition.isr.len() == 3)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !isr_full().await {
        assert!(
            Instant::now() < deadline,
            "ISRs not full:\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The controller listener takes only TLS with a broker's certificate:
    // a plaintext frame gets a TLS alert and the connection closed.
    let mut stream = TcpStream::connect(cluster.nodes[0].controller_address()).unwrap();
    stream.write_all(&[0, 0, 0, 4, 1, 2, 3, 4]).unwrap();
    assert_closed(&mut stream, Duration::from_secs(15));
    // /metrics is HTTPS.
    let script = r#"
import ssl, sys, urllib.request
context = ssl.create_default_context(cafile=sys.argv[2])
body = urllib.request.urlopen(f"https://127.0.0.1:{sys.argv[1]}/metrics", context=context).read().decode()
print("strata_raft_term" in body)
"#;
    let metrics_port = cluster.nodes[0].metrics_port.to_string();
    let ca = certificates.ca.display().to_string();
    let scraped = tokio::task::spawn_blocking(move || python(script, &[&metrics_port, &ca]))
        .await
        .unwrap();
    assert_eq!(scraped.trim(), "True");

    // The one handshake that failed is the client without a certificate.
    let logs = cluster.logs();
    assert_eq!(
        logs.matches("INFO strata_broker::server::connection: TLS handshake failed")
            .count(),
        1,
        "{logs}"
    );
    assert!(logs.contains("peer sent no certificates"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_to_tls_and_tls_to_plaintext_fail_cleanly_on_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let certificates = Certificates::create(dir.path(), "", "Strata test CA");
    let other = Certificates::create(dir.path(), "other-", "Another CA");
    let port = free_port();
    let mut args: Vec<String> = listener("SSL", "ssl", port).to_vec();
    args.extend(certificates.broker_flags());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let logd = Logd::start_with(&args);
    let tls_address = format!("127.0.0.1:{port}");
    let plaintext = logd.bootstrap();

    let error = Admin::with_config(config(&tls_address, Security::default()))
        .await
        .err()
        .expect("plaintext to a TLS listener fails");
    assert!(error.to_string().contains("TLS"), "{error}");
    let tls_only = Security {
        tls: Some(tls(&certificates.ca)),
        sasl: None,
    };
    let error = Admin::with_config(config(&plaintext, tls_only.clone()))
        .await
        .err()
        .expect("TLS to a plaintext listener fails");
    assert!(error.to_string().contains("TLS handshake"), "{error}");
    let untrusted = Security {
        tls: Some(tls(&other.ca)),
        sasl: None,
    };
    let error = Admin::with_config(config(&tls_address, untrusted))
        .await
        .err()
        .expect("a certificate from an unknown CA is refused");
    assert!(error.to_string().contains("certificate"), "{error}");

    // Both listeners still serve their own kind.
    let admin = Admin::with_config(config(&tls_address, tls_only))
        .await
        .unwrap();
    admin.create_topic(&NewTopic::new("t", 1, 1)).await.unwrap();
    Admin::connect(&plaintext)
        .await
        .unwrap()
        .wait_for_leaders("t", Duration::from_secs(10))
        .await
        .unwrap();
    let log = logd.log();
    assert!(log.contains("TLS handshake failed"), "{log}");
    assert!(log.contains("the peer speaks TLS"), "{log}");
}

/// Starts a broker with a SASL_SSL and a SASL_PLAINTEXT listener and alice
/// created: (broker, SASL_SSL address, SASL_PLAINTEXT address).
async fn sasl_broker(certificates: &Certificates) -> (Logd, String, String) {
    let (ssl_port, plain_port) = (free_port(), free_port());
    let mut args: Vec<String> = [
        listener("SECURE", "sasl_ssl", ssl_port),
        listener("LOCAL", "sasl_plaintext", plain_port),
    ]
    .concat();
    args.extend(certificates.broker_flags());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let logd = Logd::start_with(&args);
    create_alice(&logd.bootstrap()).await;
    (
        logd,
        format!("127.0.0.1:{ssl_port}"),
        format!("127.0.0.1:{plain_port}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_fail_slowly_and_nothing_is_served_before_one_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let certificates = Certificates::create(dir.path(), "", "Strata test CA");
    let (logd, secure, local) = sasl_broker(&certificates).await;
    let scram = SaslMechanism::Scram(ScramMechanism::Sha256);

    // A wrong password and an unknown user get the same answer, after the
    // failure delay.
    let mut answers = Vec::new();
    for (user, password) in [(USER, "wrong"), ("mallory", PASSWORD)] {
        let started = Instant::now();
        let security = Security {
            tls: Some(tls(&certificates.ca)),
            sasl: Some(SaslSettings {
                username: user.to_string(),
                ..sasl(scram, password)
            }),
        };
        let error = Admin::with_config(config(&secure, security))
            .await
            .err()
            .expect("a bad login fails");
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "failed after {:?}",
            started.elapsed()
        );
        answers.push(error.to_string().replace(user, "USER"));
    }
    assert!(answers[0].contains("invalid credentials"), "{}", answers[0]);
    assert_eq!(answers[0], answers[1], "unknown users look like known ones");

    // The right password works on both listeners, with each mechanism.
    for (address, tls_settings) in [(&secure, Some(tls(&certificates.ca))), (&local, None)] {
        for mechanism in [
            SaslMechanism::Scram(ScramMechanism::Sha256),
            SaslMechanism::Scram(ScramMechanism::Sha512),
        ] {
            let security = Security {
                tls: tls_settings.clone(),
                sasl: Some(sasl(mechanism, PASSWORD)),
            };
            let admin = Admin::with_config(config(address, security)).await.unwrap();
            admin.list_topics().await.unwrap();
        }
    }
    // PLAIN is not offered unless configured.
    let security = Security {
        tls: Some(tls(&certificates.ca)),
        sasl: Some(sasl(SaslMechanism::Plain, PASSWORD)),
    };
    let error = Admin::with_config(config(&secure, security))
        .await
        .err()
        .expect("PLAIN is not offered");
    assert!(error.to_string().contains("does not offer it"), "{error}");

    let local: SocketAddr = local.parse().unwrap();
    // Before logging in: ApiVersions is answered, anything else closes
    // the connection unanswered.
    let mut connection = Connection::open(local).unwrap();
    connection.api_versions().unwrap();
    let metadata = kafka_protocol::messages::RequestKind::Metadata(
        kafka_protocol::messages::MetadataRequest::default(),
    );
    assert!(connection
        .send(kafka_protocol::messages::ApiKey::Metadata, 12, &metadata)
        .is_err());
    // A frame larger than the unauthenticated limit is refused at once.
    let mut stream = TcpStream::connect(local).unwrap();
    stream.write_all(&(1i32 << 20).to_be_bytes()).unwrap();
    assert_closed(&mut stream, Duration::from_secs(5));
    // A connection that says nothing is closed at the login deadline.
    let mut stream = TcpStream::connect(local).unwrap();
    let started = Instant::now();
    assert_closed(&mut stream, Duration::from_secs(20));
    assert!(started.elapsed() >= Duration::from_secs(9));
    wait_for(Duration::from_secs(5), "the closing logged", || {
        logd.log()
            .contains("did not authenticate in time")
            .then_some(())
    });

    // PLAIN where passwords would travel in the clear is refused at start.
    let output = Command::new(logd_binary())
        .args([
            "--data-dir",
            &dir.path().join("refused").display().to_string(),
        ])
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--controller-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--metrics-listen", &format!("127.0.0.1:{}", free_port())])
        .args(listener("LOCAL", "sasl_plaintext", free_port()))
        .args(["--sasl-mechanisms", "PLAIN"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("in the clear"), "{stderr}");
}

/// Reads until the peer closes; fails if it does not within `timeout` or
/// sends anything but a TLS alert.
fn assert_closed(stream: &mut TcpStream, timeout: Duration) {
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut buffer = [0u8; 64];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return,
            // A TLS alert record: content type 21, version 3.x.
            Ok(read) if read >= 2 && buffer[..2] == [21, 3] => continue,
            Ok(read) => panic!("the broker answered {:?}", &buffer[..read]),
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(error) => panic!("the connection stayed open: {error}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_strangers_leave_memory_bounded_and_users_served() {
    raise_open_files_limit(8192);
    let dir = tempfile::tempdir().unwrap();
    let certificates = Certificates::create(dir.path(), "", "Strata test CA");
    let (logd, secure, local) = sasl_broker(&certificates).await;
    let security = Security {
        tls: Some(tls(&certificates.ca)),
        sasl: Some(sasl(SaslMechanism::Scram(ScramMechanism::Sha512), PASSWORD)),
    };
    create_topic(&secure, &security, "busy", 1, 1).await;
    let idle = logd.rss_bytes().expect("logd's memory");

    // 1 000 strangers: junk, huge size prefixes, frames just under the
    // unauthenticated limit sent a byte at a time, and TLS listeners fed
    // plaintext.
    let local: SocketAddr = local.parse().unwrap();
    let secure_address: SocketAddr = secure.parse().unwrap();
    let mut strangers = Vec::new();
    for index in 0..1000 {
        let target = if index % 4 == 3 {
            secure_address
        } else {
            local
        };
        let Ok(mut stream) = TcpStream::connect(target) else {
            continue;
        };
        let first: Vec<u8> = match index % 4 {
            0 => b"GET / HTTP/1.1\r\nHost: strata\r\n\r\n".to_vec(),
            1 => i32::MAX.to_be_bytes().to_vec(),
            2 => {
                let mut frame = (60_000i32).to_be_bytes().to_vec();
                frame.extend_from_slice(&[0u8; 16]);
                frame
            }
            _ => vec![0xff; 512],
        };
        let _ = stream.write_all(&first);
        strangers.push(stream);
    }
    // Meanwhile a user is served.
    produce(&secure, &security, "busy", "served", 1000).await;
    let mut consumer = Consumer::builder(&secure)
        .security(security)
        .build()
        .await
        .unwrap();
    consumer.assign(&[("busy", 0)]).await.unwrap();
    consumer.seek("busy", 0, Offset::Beginning).unwrap();
    let mut read = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while read < 1000 && Instant::now() < deadline {
        read += consumer
            .poll(Duration::from_millis(500))
            .await
            .unwrap()
            .len();
    }
    assert_eq!(read, 1000);
    // The trickling strangers keep sending; their frames never complete.
    for stream in strangers.iter_mut().skip(2).step_by(4) {
        let _ = stream.write_all(&[0u8; 1]);
    }
    let peak = (0..10)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            logd.rss_bytes().unwrap_or(0)
        })
        .max()
        .unwrap();
    let grown_mib = peak.saturating_sub(idle) as f64 / (1 << 20) as f64;
    println!(
        "strangers: {} connected; logd memory idle {} MiB, peak {} MiB (+{grown_mib:.1} MiB)",
        strangers.len(),
        idle >> 20,
        peak >> 20
    );
    assert!(grown_mib < 64.0, "logd grew {grown_mib:.1} MiB");
    // Every stranger is closed, the trickling ones at the login deadline.
    wait_for(Duration::from_secs(30), "every stranger closed", || {
        strangers.retain_mut(|stream| !is_closed(stream));
        strangers.is_empty().then_some(())
    });
}

/// Whether the peer closed `stream` (what it sent before, a TLS alert say,
/// is read and dropped).
fn is_closed(stream: &mut TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut buffer = [0u8; 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

fn raise_open_files_limit(wanted: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write and read the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < wanted {
            limit.rlim_cur = wanted.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let first = Certificates::create(dir.path(), "first-", "First CA");
    let second = Certificates::create(dir.path(), "second-", "Second CA");
    let (certificate, key) = (dir.path().join("broker.pem"), dir.path().join("broker.key"));
    std::fs::copy(&first.broker_certificate, &certificate).unwrap();
    std::fs::copy(&first.broker_key, &key).unwrap();
    let port = free_port();
    let mut args: Vec<String> = listener("SSL", "ssl", port).to_vec();
    args.extend([
        "--tls-cert".to_string(),
        certificate.display().to_string(),
        "--tls-key".to_string(),
        key.display().to_string(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut logd = Logd::start_with(&args);
    let address = format!("127.0.0.1:{port}");
    let trusting = |certificates: &Certificates| {
        config(
            &address,
            Security {
                tls: Some(tls(&certificates.ca)),
                sasl: None,
            },
        )
    };
    Admin::with_config(trusting(&first)).await.unwrap();
    assert!(Admin::with_config(trusting(&second)).await.is_err());

    // A half-written file is refused and the old certificate stays.
    std::fs::write(&certificate, "not a certificate").unwrap();
    logd.hangup();
    wait_for(Duration::from_secs(10), "the refused reload logged", || {
        logd.log()
            .contains("cannot re-read the TLS files")
            .then_some(())
    });
    Admin::with_config(trusting(&first)).await.unwrap();

    std::fs::copy(&second.broker_certificate, &certificate).unwrap();
    std::fs::copy(&second.broker_key, &key).unwrap();
    logd.hangup();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Admin::with_config(trusting(&second)).await.is_err() {
        assert!(Instant::now() < deadline, "{}", logd.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(Admin::with_config(trusting(&first)).await.is_err());
}
