//! A network the test controls between the brokers of a cluster: every
//! broker's Kafka port and controller port sit behind a proxy, every broker
//! reaches every other (and every controller voter) through those proxies,
//! and so do clients. A test cuts a link one way or both, or delays it, per
//! port; [`Network::heal`] restores everything.
//!
//! A proxy knows who connected from the connecting socket itself: it looks
//! the peer's port up in `/proc/net/tcp`, then finds which `logd` process
//! holds that socket, and reads its `--node-id`. Anything else is a
//! client. So no broker needs a different address per peer, and a broker
//! restarted with kill -9 is recognised again.
//!
//! Cutting a direction drops what crosses it (the proxy reads and discards
//! it), so the sender waits for answers that never come, as behind a real
//! partition; healing closes the connections that lost bytes, since their
//! streams can no longer be parsed, and both sides reconnect.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// Who is at one end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    Client,
    Broker(i32),
}

/// Which of a broker's listeners a link leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Port {
    /// Kafka clients, followers' replica fetches, coordinator calls.
    Kafka,
    /// The Raft controller quorum and brokers' heartbeats.
    Controller,
}

pub const BOTH_PORTS: [Port; 2] = [Port::Kafka, Port::Controller];

/// What happens to bytes sent from one endpoint to another on one port.
#[derive(Debug, Clone, Copy, Default)]
struct Link {
    cut: bool,
    delay: Duration,
}

#[derive(Default)]
struct Shared {
    links: Mutex<HashMap<(Endpoint, Endpoint, Port), Link>>,
    connections: Mutex<Vec<Weak<Connection>>>,
}

/// One proxied connection.
struct Connection {
    upstream: TcpStream,
    downstream: TcpStream,
    /// Bytes were dropped: the streams are out of step.
    lost_bytes: AtomicBool,
    from: Endpoint,
    to: Endpoint,
    port: Port,
}

impl Connection {
    fn close(&self) {
        let _ = self.upstream.shutdown(Shutdown::Both);
        let _ = self.downstream.shutdown(Shutdown::Both);
    }
}

/// The proxies of a cluster and the links between its endpoints.
pub struct Network {
    shared: Arc<Shared>,
    /// (broker, port) → where its proxy listens.
    addresses: HashMap<(i32, Port), SocketAddr>,
    /// Proxies bound but not forwarding yet.
    idle: HashMap<(i32, Port), TcpListener>,
    stopped: Arc<AtomicBool>,
}

impl Network {
    /// Proxies for brokers `1..=size`, both ports, forwarding nothing yet.
    pub fn new(size: i32) -> Network {
        let shared = Arc::new(Shared::default());
        let stopped = Arc::new(AtomicBool::new(false));
        let mut addresses = HashMap::new();
        let mut idle = HashMap::new();
        for node in 1..=size {
            for port in BOTH_PORTS {
                let listener = TcpListener::bind("127.0.0.1:0").expect("bind a proxy");
                addresses.insert((node, port), listener.local_addr().expect("proxy address"));
                idle.insert((node, port), listener);
            }
        }
        Network {
            shared,
            addresses,
            idle,
            stopped,
        }
    }

    /// Where broker `node`'s `port` is reached through the network.
    pub fn address(&self, node: i32, port: Port) -> SocketAddr {
        self.addresses[&(node, port)]
    }

    /// Starts forwarding to `target`, the real listener of `node`'s `port`.
    pub fn forward(&mut self, node: i32, port: Port, target: SocketAddr) {
        let address = self.address(node, port);
        let listener = self
            .idle
            .remove(&(node, port))
            .expect("a proxy forwards once");
        let (shared, stopped) = (Arc::clone(&self.shared), Arc::clone(&self.stopped));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = client else { continue };
                // Finding who connected reads /proc: never in the way of
                // the next accept.
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || {
                    let from = who_connected(&client, address);
                    let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(2))
                    else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let connection = Arc::new(Connection {
                        upstream: server,
                        downstream: client,
                        lost_bytes: AtomicBool::new(false),
                        from,
                        to: Endpoint::Broker(node),
                        port,
                    });
                    let mut connections = shared.connections.lock().unwrap();
                    connections.retain(|weak| weak.strong_count() > 0);
                    connections.push(Arc::downgrade(&connection));
                    drop(connections);
                    let downstream = {
                        let (shared, connection) = (Arc::clone(&shared), Arc::clone(&connection));
                        std::thread::spawn(move || pump(&shared, &connection, false))
                    };
                    pump(&shared, &connection, true);
                    let _ = downstream.join();
                });
            }
        });
    }

    /// Drops what `from` sends to `to` on `ports`, from now until healed.
    pub fn cut(&self, from: Endpoint, to: Endpoint, ports: &[Port]) {
        self.change(from, to, ports, |link| link.cut = true);
    }

    /// Cuts both directions between `a` and `b`.
    pub fn cut_between(&self, a: Endpoint, b: Endpoint, ports: &[Port]) {
        self.cut(a, b, ports);
        self.cut(b, a, ports);
    }

    /// Cuts broker `node` off from every other broker (of `size`) on
    /// `ports`, both ways; clients still reach it.
    pub fn isolate(&self, node: i32, size: i32, ports: &[Port]) {
        for other in (1..=size).filter(|&other| other != node) {
            self.cut_between(Endpoint::Broker(node), Endpoint::Broker(other), ports);
        }
    }

    /// Holds what `from` sends to `to` on `ports` for `delay`.
    pub fn delay(&self, from: Endpoint, to: Endpoint, ports: &[Port], delay: Duration) {
        self.change(from, to, ports, |link| link.delay = delay);
    }

    fn change(&self, from: Endpoint, to: Endpoint, ports: &[Port], change: impl Fn(&mut Link)) {
        let mut links = self.shared.links.lock().unwrap();
        for &port in ports {
            change(links.entry((from, to, port)).or_default());
        }
    }

    /// Restores every link and closes the connections that lost bytes.
    pub fn heal(&self) {
        self.shared.links.lock().unwrap().clear();
        for connection in self.shared.connections.lock().unwrap().iter() {
            if let Some(connection) = connection.upgrade() {
                if connection.lost_bytes.load(Ordering::Relaxed) {
                    connection.close();
                }
            }
        }
    }

    /// Live connections as (from, to, port), for failure messages.
    pub fn connections(&self) -> Vec<(Endpoint, Endpoint, Port)> {
        let connections = self.shared.connections.lock().unwrap();
        let mut list: Vec<_> = connections
            .iter()
            .filter_map(Weak::upgrade)
            .map(|connection| (connection.from, connection.to, connection.port))
            .collect();
        list.sort();
        list
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::Relaxed);
        for address in self.addresses.values() {
            // Wakes each accept loop so it sees the flag.
            let _ = TcpStream::connect_timeout(address, Duration::from_millis(100));
        }
        for connection in self.shared.connections.lock().unwrap().iter() {
            if let Some(connection) = connection.upgrade() {
                connection.close();
            }
        }
    }
}

/// Moves bytes one way across `connection` (`upstream`: from the one who
/// connected to the broker), dropping or delaying them as the link says.
/// A second thread writes, so a delay holds bytes without holding reads.
fn pump(shared: &Shared, connection: &Arc<Connection>, upstream: bool) {
    let (mut source, sink, from, to) = if upstream {
        (
            &connection.downstream,
            &connection.upstream,
            connection.from,
            connection.to,
        )
    } else {
        (
            &connection.upstream,
            &connection.downstream,
            connection.to,
            connection.from,
        )
    };
    let (sender, receiver) = mpsc::channel::<(Instant, Vec<u8>)>();
    let writer = {
        let mut sink = sink.try_clone().expect("clone a socket");
        std::thread::spawn(move || {
            for (due, bytes) in receiver {
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                if sink.write_all(&bytes).is_err() {
                    break;
                }
            }
            let _ = sink.shutdown(Shutdown::Write);
        })
    };
    let mut buffer = vec![0u8; 64 << 10];
    loop {
        let read = match source.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        let link = shared
            .links
            .lock()
            .unwrap()
            .get(&(from, to, connection.port))
            .copied()
            .unwrap_or_default();
        if link.cut {
            connection.lost_bytes.store(true, Ordering::Relaxed);
            continue;
        }
        if sender
            .send((Instant::now() + link.delay, buffer[..read].to_vec()))
            .is_err()
        {
            break;
        }
    }
    drop(sender);
    let _ = writer.join();
    connection.close();
}

/// Who holds the other end of `stream`, accepted on `listening`: the
/// broker whose `logd` process owns the connecting socket, or a client.
fn who_connected(stream: &TcpStream, listening: SocketAddr) -> Endpoint {
    let Ok(peer) = stream.peer_addr() else {
        return Endpoint::Client;
    };
    socket_inode(peer, listening)
        .and_then(broker_holding)
        .map_or(Endpoint::Client, Endpoint::Broker)
}

/// The inode of the socket bound to `local` and connected to `remote`,
/// from `/proc/net/tcp` (IPv4 only: the tests use 127.0.0.1).
fn socket_inode(local: SocketAddr, remote: SocketAddr) -> Option<u64> {
    let hex = |address: SocketAddr| match address {
        SocketAddr::V4(v4) => Some(format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(v4.ip().octets()),
            v4.port()
        )),
        SocketAddr::V6(_) => None,
    };
    let (local, remote) = (hex(local)?, hex(remote)?);
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&local.as_str()) && fields.get(2) == Some(&remote.as_str()))
            .then(|| fields.get(9)?.parse().ok())
            .flatten()
    })
}

/// The `--node-id` of the `logd` process holding socket `inode`.
fn broker_holding(inode: u64) -> Option<i32> {
    let socket = format!("socket:[{inode}]");
    for process in std::fs::read_dir("/proc").ok()?.flatten() {
        let path = process.path();
        let is_logd =
            std::fs::read_to_string(path.join("comm")).is_ok_and(|comm| comm.trim() == "logd");
        if !is_logd {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(path.join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|link| link.as_os_str() == socket.as_str())
        });
        if holds {
            let cmdline = std::fs::read(path.join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|&byte| byte == 0).collect();
            let index = args.iter().position(|arg| *arg == b"--node-id")?;
            return std::str::from_utf8(args.get(index + 1)?).ok()?.parse().ok();
        }
    }
    None
}
