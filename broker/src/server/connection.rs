//! One client connection: secured first as its listener requires (a TLS
//! handshake, a SASL exchange; both within `AUTHENTICATION_TIMEOUT`), then
//! frames in, responses out in request order, with up to
//! `IN_FLIGHT_REQUESTS_PER_CONNECTION` requests being handled at once.
//!
//! A connection is closed (and nothing else is affected) when it fails to
//! authenticate, sends a frame over the size limit (a small one until it
//! authenticated), a frame that is not a request Strata serves, nothing for
//! `CONNECTION_IDLE_TIMEOUT`, or half a frame for `PARTIAL_REQUEST_TIMEOUT`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use std::io::IoSlice;

use futures::stream::FuturesOrdered;
use futures::StreamExt;
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use strata_protocol::frame::{FrameCodec, FrameError};
use strata_protocol::request::{self, Request, RequestError};
use strata_protocol::response::{self, Frame};
use strata_protocol::sasl::Mechanism;
use strata_protocol::transport::Stream;
use strata_protocol::versions;
use tokio::io::{AsyncWrite, AsyncWriteExt, ReadHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::dispatch::dispatch;
use crate::config::SecurityProtocol;
use crate::handler::error_code;
use crate::handler::Context;
use crate::limits::{
    AUTHENTICATION_TIMEOUT, CONNECTION_IDLE_TIMEOUT, DECODED_REQUESTS_AHEAD_MAX,
    IN_FLIGHT_REQUESTS_PER_CONNECTION, PARTIAL_REQUEST_TIMEOUT, REQUEST_BYTES_MAX,
    UNAUTHENTICATED_REQUEST_BYTES_MAX,
};
use crate::security::tls::{Peers, Tls};
use crate::security::{sasl, Principal};

/// A listener, as its connections see it.
pub struct Listener {
    pub name: Arc<str>,
    pub security_protocol: SecurityProtocol,
    /// Set exactly when the security protocol uses TLS.
    pub tls: Option<Arc<Tls>>,
    /// The SASL mechanisms offered here (empty unless SASL).
    pub sasl_mechanisms: Vec<Mechanism>,
}

/// Who is on a connection, for the handlers that need to know.
pub struct Session {
    /// The peer's address as Kafka shows a group member's host (`/1.2.3.4`).
    pub client_host: Arc<str>,
    /// The listener it came in on: it is told the other brokers' addresses
    /// on the listener of the same name.
    pub listener: Arc<str>,
    pub principal: Principal,
}

/// A response being prepared: its frame, `None` when the client expects no
/// response, or an error that closes the connection.
type Answer = Pin<Box<dyn Future<Output = Result<Option<Frame>, response::EncodeError>> + Send>>;

/// What the reading half hands to the serving half.
enum Incoming {
    Request(Box<Request>),
    /// An ApiVersions request newer than this broker: answer in v0 with the
    /// supported versions so the client can pick one.
    ApiVersionsTooNew {
        correlation_id: i32,
    },
}

/// Serves `stream` until the client leaves, misbehaves, or `shutdown` fires.
pub async fn serve(
    context: Arc<Context>,
    listener: Arc<Listener>,
    stream: TcpStream,
    shutdown: CancellationToken,
) {
    let peer_addr = stream.peer_addr().ok();
    let peer = peer_addr
        .map(|address| address.to_string())
        .unwrap_or_default();
    let _ = stream.set_nodelay(true);
    let secure = secure(&context, &listener, stream, &peer);
    let secured = tokio::select! {
        _ = shutdown.cancelled() => return,
        secured = tokio::time::timeout(AUTHENTICATION_TIMEOUT, secure) => secured,
    };
    let (frames, mut writer, principal) = match secured {
        Ok(Some(secured)) => secured,
        Ok(None) => return,
        Err(_elapsed) => {
            info!(%peer, listener = %listener.name, timeout = ?AUTHENTICATION_TIMEOUT,
                "closing a connection that did not authenticate in time");
            return;
        }
    };
    let session = Arc::new(Session {
        client_host: peer_addr
            .map(|address| format!("/{}", address.ip()))
            .unwrap_or_default()
            .into(),
        listener: Arc::clone(&listener.name),
        principal,
    });
    let (incoming_sender, mut incoming) = mpsc::channel(DECODED_REQUESTS_AHEAD_MAX);
    let misbehaved = CancellationToken::new();
    let reading = AbortOnDrop(tokio::spawn(read_requests(
        frames,
        incoming_sender,
        misbehaved.clone(),
        peer.clone(),
    )));
    let mut in_flight: FuturesOrdered<Answer> = FuturesOrdered::new();
    let mut client_done = false;
    loop {
        let can_take = in_flight.len() < IN_FLIGHT_REQUESTS_PER_CONNECTION && !client_done;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = misbehaved.cancelled() => return,
            Some(answer) = in_flight.next(), if !in_flight.is_empty() => {
                match answer {
                    Ok(Some(frame)) => {
                        if let Err(error) = write_frame(&mut writer, &frame).await {
                            debug!(%peer, %error, "cannot write response; closing");
                            return;
                        }
                    }
                    Ok(None) => {}
                    Err(error) => {
                        tracing::error!(%peer, %error, "closing connection");
                        return;
                    }
                }
            }
            next = incoming.recv(), if can_take => match next {
                Some(Incoming::Request(request)) => {
                    let context = Arc::clone(&context);
                    let session = Arc::clone(&session);
                    let (api_key, api_version, correlation_id) = (request.api_key, request.api_version, request.correlation_id());
                    in_flight.push_back(Box::pin(async move {
                        match dispatch(&context, *request, &session).await {
                            Some(body) => response::encode(api_key, api_version, correlation_id, &body).map(Some),
                            None => Ok(None),
                        }
                    }));
                }
                Some(Incoming::ApiVersionsTooNew { correlation_id }) => {
                    let body = ResponseKind::ApiVersions(versions::api_versions_response(error_code::UNSUPPORTED_VERSION));
                    let answer = response::encode(ApiKey::ApiVersions, 0, correlation_id, &body).map(Some);
                    in_flight.push_back(Box::pin(async move { answer }));
                }
                None => client_done = true,
            },
            else => break,
        }
        if client_done && in_flight.is_empty() {
            break;
        }
    }
    drop(reading);
}

type Frames = FramedRead<ReadHalf<Stream>, FrameCodec>;

/// Makes the connection what its listener requires: TLS (the handshake),
/// then for SASL the exchange that names the principal. `None` when the
/// connection must close (the reason is logged).
async fn secure(
    context: &Context,
    listener: &Listener,
    stream: TcpStream,
    peer: &str,
) -> Option<(Frames, tokio::io::WriteHalf<Stream>, Principal)> {
    let stream = match &listener.tls {
        None => Stream::Tcp(stream),
        Some(tls) => match tls
            .acceptor(if listener.security_protocol.sasl() {
                Peers::Anyone
            } else {
                Peers::Clients
            })
            .accept(stream)
            .await
        {
            Ok(stream) => Stream::TlsServer(Box::new(stream)),
            Err(error) => {
                info!(%peer, listener = %listener.name, %error, "TLS handshake failed");
                return None;
            }
        },
    };
    let (reader, mut writer) = tokio::io::split(stream);
    if !listener.security_protocol.sasl() {
        let frames = FramedRead::new(reader, FrameCodec::new(REQUEST_BYTES_MAX));
        return Some((frames, writer, Principal::anonymous()));
    }
    let mut frames = FramedRead::new(reader, FrameCodec::new(UNAUTHENTICATED_REQUEST_BYTES_MAX));
    let principal = sasl::authenticate(
        context,
        &listener.sasl_mechanisms,
        &mut frames,
        &mut writer,
        peer,
    )
    .await?;
    frames.decoder_mut().set_frame_bytes_max(REQUEST_BYTES_MAX);
    Some((frames, writer, principal))
}

/// Reads and decodes requests until the client closes its side (the sender
/// is dropped) or misbehaves (`misbehaved` is cancelled: the connection closes
/// without finishing what it asked for).
async fn read_requests(
    mut frames: Frames,
    incoming: mpsc::Sender<Incoming>,
    misbehaved: CancellationToken,
    peer: String,
) {
    // Who is on the other end, as the client said in its requests (the
    // software name arrives with ApiVersions v3 and later), for the log.
    let mut client_id = String::new();
    let mut software = String::new();
    loop {
        let read_timeout = if frames.read_buffer().is_empty() {
            CONNECTION_IDLE_TIMEOUT
        } else {
            PARTIAL_REQUEST_TIMEOUT
        };
        let frame = match tokio::time::timeout(read_timeout, frames.next()).await {
            Err(_elapsed) => {
                info!(%peer, timeout = ?read_timeout, "closing a connection that went quiet");
                break;
            }
            Ok(None) => return,
            // Most TLS clients close without a close_notify: between two
            // frames that is an ordinary goodbye.
            Ok(Some(Err(FrameError::Io(error))))
                if error.kind() == std::io::ErrorKind::UnexpectedEof
                    && frames.read_buffer().is_empty() =>
            {
                return
            }
            Ok(Some(Err(error))) => {
                info!(%peer, %error, "closing connection");
                break;
            }
            Ok(Some(Ok(frame))) => frame.freeze(),
        };
        let next = match request::decode(frame) {
            Ok(request) => {
                if request.client_id() != client_id {
                    client_id = request.client_id().to_string();
                }
                if let RequestKind::ApiVersions(api_versions) = &request.body {
                    software = format!(
                        "{} {}",
                        api_versions.client_software_name.as_str(),
                        api_versions.client_software_version.as_str()
                    );
                }
                if request.trailing_bytes > 0 {
                    debug!(%peer, %client_id, %software, api_key = ?request.api_key,
                        api_version = request.api_version, trailing_bytes = request.trailing_bytes,
                        "ignoring bytes after a request's body");
                }
                Incoming::Request(Box::new(request))
            }
            Err(RequestError::UnsupportedVersion {
                api_key: ApiKey::ApiVersions,
                correlation_id,
                ..
            }) => Incoming::ApiVersionsTooNew { correlation_id },
            Err(error) => {
                warn!(%peer, %client_id, %software, %error, "closing connection after a request it cannot serve");
                break;
            }
        };
        if incoming.send(next).await.is_err() {
            return;
        }
    }
    misbehaved.cancel();
}

/// Writes a response frame, chunk after chunk, with vectored writes (its
/// record sets go from where they lie straight to the socket).
pub(crate) async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    frame: &Frame,
) -> std::io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = frame
        .chunks()
        .iter()
        .map(|chunk| IoSlice::new(chunk))
        .collect();
    let mut remaining = &mut slices[..];
    while !remaining.is_empty() {
        let written = writer.write_vectored(remaining).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut remaining, written);
    }
    // TLS holds the last records until flushed (a no-op on plain TCP).
    writer.flush().await
}

/// Aborts the task when dropped, so a connection's reader never outlives it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
