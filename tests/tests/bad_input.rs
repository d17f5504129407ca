//! Bad input closes the offending connection and nothing else: the broker
//! stays up and keeps serving a well-behaved client throughout.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use strata_tests::{create_topic, fetch_all, produce, Connection, Logd};

/// Sends `bytes` on a fresh connection and expects the broker to close it.
fn expect_closed(logd: &Logd, bytes: &[u8]) {
    let mut stream = TcpStream::connect(logd.address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = stream.write_all(bytes);
    let mut buffer = [0u8; 64];
    match stream.read(&mut buffer) {
        Ok(0) => {}
        Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("expected the broker to close the connection, got {other:?}"),
    }
}

fn check_served(logd: &mut Logd, client: &mut Connection, value: &str) {
    assert!(logd.is_running(), "logd died:\n{}", logd.log());
    let offset = produce(client, "healthy", 0, -1, &[value.as_bytes().to_vec()])
        .unwrap()
        .unwrap();
    assert!(fetch_all(client, "healthy", 0).contains(&(offset, value.as_bytes().to_vec())));
}

#[test]
fn malformed_frames_close_only_their_connection() {
    let mut logd = Logd::start();
    create_topic(&logd, "healthy", 1);
    let mut client = logd.connect();
    check_served(&mut logd, &mut client, "before");

    // Random bytes: the size prefix reads as a huge or negative frame, or the
    // frame decodes to nothing Strata serves.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..50 {
        let garbage: Vec<u8> = (0..200)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let mut framed = (garbage.len() as i32).to_be_bytes().to_vec();
        framed.extend_from_slice(&garbage);
        expect_closed(&logd, &framed);
    }
    check_served(&mut logd, &mut client, "after random bytes");

    // A 2 GiB length prefix is refused from the prefix alone.
    expect_closed(&logd, &i32::MAX.to_be_bytes());
    // An unknown API key.
    expect_closed(
        &logd,
        &[0, 0, 0, 10, 0x7f, 0x7f, 0, 0, 0, 0, 0, 1, 0xff, 0xff],
    );
    // A claimed array of two billion topics (Metadata v0).
    expect_closed(
        &logd,
        &[
            0, 0, 0, 14, 0, 3, 0, 0, 0, 0, 0, 7, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff,
        ],
    );
    check_served(&mut logd, &mut client, "after hostile frames");

    // A truncated frame: the client announces 100 bytes, sends 10 and leaves.
    let mut stream = TcpStream::connect(logd.address).unwrap();
    stream
        .write_all(&[0, 0, 0, 100, 0, 18, 0, 3, 0, 0, 0, 1, 0, 0])
        .unwrap();
    drop(stream);
    check_served(&mut logd, &mut client, "after a truncated frame");
}

#[test]
fn a_burst_of_10000_connections_is_bounded_and_the_broker_keeps_serving() {
    raise_file_limit();
    let mut logd = Logd::start();
    create_topic(&logd, "healthy", 1);
    let mut client = logd.connect();
    let mut burst = Vec::new();
    for index in 0..10_000 {
        match TcpStream::connect_timeout(&logd.address, Duration::from_secs(1)) {
            Ok(stream) => burst.push(stream),
            Err(_backlog_full) => {}
        }
        if index % 2_000 == 0 {
            check_served(&mut logd, &mut client, &format!("during the burst {index}"));
        }
    }
    check_served(&mut logd, &mut client, "with the burst open");
    drop(burst);
    check_served(&mut logd, &mut client, "after the burst");
    let mut fresh = logd.connect();
    check_served(&mut logd, &mut fresh, "on a new connection");
}

fn raise_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a stack value.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max.min(65_536);
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
}
