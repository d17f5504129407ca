//! A TCP proxy the test controls, between Kafka clients and a broker: it
//! forwards requests as they are and can drop responses, closing the
//! connection after the broker has handled the request. A client then sees
//! a request fail whose effect happened: the retry an idempotent producer
//! must make safe.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Largest response frame the proxy forwards (a fetch of many partitions).
const FRAME_BYTES_MAX: usize = 256 << 20;

pub struct FaultProxy {
    /// Where clients connect (advertise this as the broker's address).
    pub address: SocketAddr,
    shared: Arc<Shared>,
}

struct Shared {
    target: Mutex<Option<SocketAddr>>,
    /// Drop one response in this many (0: none).
    drop_one_in: AtomicU64,
    responses: AtomicU64,
    dropped: AtomicU64,
    stopped: AtomicBool,
}

impl FaultProxy {
    /// Listens on a free loopback port; forwards nothing until
    /// [`FaultProxy::forward_to`].
    pub fn bind() -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let address = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            target: Mutex::new(None),
            drop_one_in: AtomicU64::new(0),
            responses: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
        });
        let accepting = Arc::clone(&shared);
        std::thread::spawn(move || accept(listener, accepting));
        FaultProxy { address, shared }
    }

    pub fn forward_to(&self, target: SocketAddr) {
        *self.shared.target.lock().unwrap() = Some(target);
    }

    /// Drops one response in `count` from now on (0: none).
    pub fn drop_one_response_in(&self, count: u64) {
        self.shared.drop_one_in.store(count, Ordering::Relaxed);
    }

    /// Responses dropped so far.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::Relaxed);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.address, Duration::from_millis(100));
    }
}

fn accept(listener: TcpListener, shared: Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stopped.load(Ordering::Relaxed) {
            return;
        }
        let Ok(client) = client else { continue };
        let Some(target) = *shared.target.lock().unwrap() else {
            continue;
        };
        let Ok(broker) = TcpStream::connect_timeout(&target, Duration::from_secs(2)) else {
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = broker.set_nodelay(true);
        let (Ok(client_reader), Ok(broker_writer)) = (client.try_clone(), broker.try_clone())
        else {
            continue;
        };
        std::thread::spawn(move || forward_requests(client_reader, broker_writer));
        let responding = Arc::clone(&shared);
        std::thread::spawn(move || forward_responses(broker, client, responding));
    }
}

fn forward_requests(mut client: TcpStream, mut broker: TcpStream) {
    let _ = std::io::copy(&mut client, &mut broker);
    let _ = broker.shutdown(Shutdown::Both);
}

/// Forwards whole response frames, dropping one in `drop_one_in` by
/// closing both sides instead.
fn forward_responses(mut broker: TcpStream, mut client: TcpStream, shared: Arc<Shared>) {
    let mut frame = Vec::new();
    loop {
        let mut size = [0u8; 4];
        if broker.read_exact(&mut size).is_err() {
            break;
        }
        let length = i32::from_be_bytes(size).max(0) as usize;
        if length > FRAME_BYTES_MAX {
            break;
        }
        frame.resize(length, 0);
        if broker.read_exact(&mut frame).is_err() {
            break;
        }
        let count = shared.responses.fetch_add(1, Ordering::Relaxed) + 1;
        let drop_one_in = shared.drop_one_in.load(Ordering::Relaxed);
        if drop_one_in > 0 && count % drop_one_in == 0 {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            break;
        }
        if client.write_all(&size).is_err() || client.write_all(&frame).is_err() {
            break;
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = broker.shutdown(Shutdown::Both);
}
