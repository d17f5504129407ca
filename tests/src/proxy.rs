//! A TCP proxy the test controls, between Kafka clients and a broker: it
//! forwards requests as they are and can drop responses to Produce
//! requests, closing the connection after the broker has handled the
//! request. A client then sees a write fail whose effect happened: the
//! retry an idempotent producer must make safe. Other responses (metadata,
//! followers' fetches) always pass, so replication is not disturbed. It
//! can also hold the next Produce request back until the test releases
//! it: a write delayed in the network, arriving after later ones.

use std::collections::VecDeque;
use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use strata_protocol::frame::{FrameCodec, FrameReader};

/// Largest frame the proxy forwards (a fetch of many partitions).
const FRAME_BYTES_MAX: usize = 256 << 20;
/// Kafka's API key of Produce.
const PRODUCE_API_KEY: i16 = 0;

/// The requests of one connection waiting for their responses: correlation
/// id and API key, oldest first.
type Outstanding = Arc<Mutex<VecDeque<(i32, i16)>>>;

pub struct FaultProxy {
    /// Where clients connect (advertise this as the broker's address).
    pub address: SocketAddr,
    shared: Arc<Shared>,
}

struct Shared {
    target: Mutex<Option<SocketAddr>>,
    /// Drop one Produce response in this many (0: none).
    drop_one_in: AtomicU64,
    produce_responses: AtomicU64,
    dropped: AtomicU64,
    stopped: AtomicBool,
    /// Armed: the next Produce request waits until `released`.
    hold_next_produce: AtomicBool,
    /// (a request is held, released)
    held: Mutex<(bool, bool)>,
    held_changed: Condvar,
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
            produce_responses: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            hold_next_produce: AtomicBool::new(false),
            held: Mutex::new((false, false)),
            held_changed: Condvar::new(),
        });
        let accepting = Arc::clone(&shared);
        std::thread::spawn(move || accept(listener, accepting));
        FaultProxy { address, shared }
    }

    pub fn forward_to(&self, target: SocketAddr) {
        *self.shared.target.lock().unwrap() = Some(target);
    }

    /// Drops one Produce response in `count` from now on (0: none).
    pub fn drop_one_produce_response_in(&self, count: u64) {
        self.shared.drop_one_in.store(count, Ordering::Relaxed);
    }

    /// Holds the next Produce request (and what follows it on its
    /// connection) until [`FaultProxy::release`].
    pub fn hold_next_produce(&self) {
        *self.shared.held.lock().unwrap() = (false, false);
        self.shared.hold_next_produce.store(true, Ordering::SeqCst);
    }

    /// Waits until a Produce request is held, for at most `timeout`.
    pub fn wait_held(&self, timeout: Duration) -> bool {
        let held = self.shared.held.lock().unwrap();
        let (held, _) = self
            .shared
            .held_changed
            .wait_timeout_while(held, timeout, |(held, _)| !*held)
            .unwrap();
        held.0
    }

    /// Lets the held Produce request go on to the broker.
    pub fn release(&self) {
        self.shared.held.lock().unwrap().1 = true;
        self.shared.held_changed.notify_all();
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
        let outstanding: Outstanding = Arc::default();
        let requests = Arc::clone(&outstanding);
        let holding = Arc::clone(&shared);
        std::thread::spawn(move || {
            forward_requests(client_reader, broker_writer, requests, holding)
        });
        let responding = Arc::clone(&shared);
        std::thread::spawn(move || forward_responses(broker, client, outstanding, responding));
    }
}

/// Reads `stream` one frame at a time; ends at the end of the stream or
/// at a frame too large to forward.
fn frames(mut stream: TcpStream) -> impl Iterator<Item = BytesMut> {
    let mut reader = FrameReader::new(FrameCodec::new(FRAME_BYTES_MAX));
    std::iter::from_fn(move || reader.read_blocking(&mut stream).ok().flatten())
}

/// Writes `frame` with its size prefix.
fn forward(to: &mut TcpStream, frame: &[u8]) -> bool {
    to.write_all(&(frame.len() as i32).to_be_bytes()).is_ok() && to.write_all(frame).is_ok()
}

/// Forwards whole request frames, noting each one's correlation id and
/// API key (request header: api key i16, version i16, correlation id i32).
fn forward_requests(
    client: TcpStream,
    mut broker: TcpStream,
    outstanding: Outstanding,
    shared: Arc<Shared>,
) {
    let shutdown = client.try_clone().expect("clone a socket");
    for frame in frames(client).take_while(|frame| frame.len() >= 8) {
        let api_key = i16::from_be_bytes([frame[0], frame[1]]);
        if api_key == PRODUCE_API_KEY && shared.hold_next_produce.swap(false, Ordering::SeqCst) {
            let mut held = shared.held.lock().unwrap();
            held.0 = true;
            shared.held_changed.notify_all();
            let _released = shared
                .held_changed
                .wait_while(held, |(_, released)| !*released)
                .unwrap();
        }
        let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
        outstanding
            .lock()
            .unwrap()
            .push_back((correlation_id, api_key));
        if !forward(&mut broker, &frame) {
            break;
        }
    }
    let _ = broker.shutdown(Shutdown::Both);
    let _ = shutdown.shutdown(Shutdown::Both);
}

/// Forwards whole response frames, dropping one Produce response in
/// `drop_one_in` by closing both sides instead.
fn forward_responses(
    broker: TcpStream,
    mut client: TcpStream,
    outstanding: Outstanding,
    shared: Arc<Shared>,
) {
    let shutdown = broker.try_clone().expect("clone a socket");
    for frame in frames(broker).take_while(|frame| frame.len() >= 4) {
        let correlation_id = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
        let api_key = {
            let mut outstanding = outstanding.lock().unwrap();
            // Responses come in request order; acks=0 produces get none.
            loop {
                match outstanding.pop_front() {
                    Some((id, api_key)) if id == correlation_id => break Some(api_key),
                    Some(_) => continue,
                    None => break None,
                }
            }
        };
        if api_key == Some(PRODUCE_API_KEY) {
            let count = shared.produce_responses.fetch_add(1, Ordering::Relaxed) + 1;
            let drop_one_in = shared.drop_one_in.load(Ordering::Relaxed);
            if drop_one_in > 0 && count.is_multiple_of(drop_one_in) {
                shared.dropped.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
        if !forward(&mut client, &frame) {
            break;
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = shutdown.shutdown(Shutdown::Both);
}
