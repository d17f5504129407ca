//! Kafka requests from this broker to another: a follower's fetches, a
//! transaction coordinator's markers, a leader's check that a transaction
//! holds a partition. [`PeerConnection`] is one connection with one
//! request in flight; [`Peers`] keeps one per broker for the calls that
//! are not a fetcher's.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use kafka_protocol::protocol::{Request, StrBytes};
use strata_protocol::exchange;
use strata_protocol::frame::{FrameCodec, FrameReader};
use strata_protocol::transport::{self, Stream};
use tokio::io::AsyncWriteExt;

use crate::controller::metadata::BrokerId;
use crate::limits;
use crate::security::tls::Tls;

/// How this broker reaches the others' inter-broker listeners: plain TCP,
/// or TLS presenting its own certificate.
#[derive(Clone, Default)]
pub struct PeerSecurity {
    tls: Option<Arc<Tls>>,
}

impl PeerSecurity {
    pub fn new(tls: Option<Arc<Tls>>) -> PeerSecurity {
        PeerSecurity { tls }
    }
}

/// A connection to another broker.
pub struct PeerConnection {
    stream: Stream,
    client_id: StrBytes,
    correlation_id: i32,
    request: BytesMut,
    /// Holds each response while it is read, then takes the next: the
    /// same warm memory call after call.
    responses: FrameReader,
}

impl PeerConnection {
    /// Connects to `address` within `timeout`; responses larger than
    /// `response_bytes_max` are refused.
    pub async fn connect(
        address: &str,
        security: &PeerSecurity,
        client_id: &'static str,
        response_bytes_max: usize,
        timeout: Duration,
    ) -> io::Result<PeerConnection> {
        let tls = security.tls.as_ref().map(|tls| tls.client());
        let stream = transport::connect(address, tls.as_ref(), timeout).await?;
        let codec = FrameCodec::new(response_bytes_max).reserving_whole_frames();
        Ok(PeerConnection {
            stream,
            client_id: StrBytes::from_static_str(client_id),
            correlation_id: 0,
            request: BytesMut::new(),
            responses: FrameReader::new(codec),
        })
    }

    /// Sends `request` at `version` and reads its response.
    pub async fn exchange<R: Request>(
        &mut self,
        version: i16,
        request: &R,
    ) -> io::Result<R::Response> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        self.request.clear();
        exchange::encode(
            &mut self.request,
            version,
            self.correlation_id,
            Some(&self.client_id),
            request,
        )?;
        self.stream.write_all(&self.request).await?;
        self.stream.flush().await?;
        let frame = self
            .responses
            .read(&mut self.stream)
            .await?
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        Ok(exchange::decode::<R>(
            frame.freeze(),
            version,
            self.correlation_id,
        )?)
    }
}

type Slot = Arc<tokio::sync::Mutex<Option<(String, PeerConnection)>>>;

/// One connection per broker for calls between brokers, opened on first
/// use and again after a failure. Calls to one broker take turns.
pub struct Peers {
    security: PeerSecurity,
    connections: Mutex<HashMap<BrokerId, Slot>>,
}

impl Peers {
    pub fn new(security: PeerSecurity) -> Peers {
        Peers {
            security,
            connections: Mutex::default(),
        }
    }

    /// Sends `request` to `broker` at `address` and reads its response,
    /// within `timeout`. A failed call closes the connection.
    pub async fn call<R: Request>(
        &self,
        broker: BrokerId,
        address: &str,
        version: i16,
        request: &R,
        timeout: Duration,
    ) -> io::Result<R::Response> {
        let slot = Arc::clone(
            self.connections
                .lock()
                .expect("peers lock")
                .entry(broker)
                .or_default(),
        );
        let mut slot = slot.lock().await;
        let call = async {
            // A broker that moved is connected to at its new address.
            if slot.as_ref().is_none_or(|(at, _)| at != address) {
                let connection = PeerConnection::connect(
                    address,
                    &self.security,
                    "strata-broker",
                    limits::PEER_RESPONSE_BYTES_MAX,
                    timeout,
                )
                .await?;
                *slot = Some((address.to_string(), connection));
            }
            let (_, connection) = slot.as_mut().expect("connected above");
            connection.exchange(version, request).await
        };
        let result = tokio::time::timeout(timeout, call)
            .await
            .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "call timed out")));
        if result.is_err() {
            *slot = None;
        }
        result
    }
}
