//! One client connection: frames in, responses out in request order, with
//! up to `IN_FLIGHT_REQUESTS_PER_CONNECTION` requests being handled at once.
//!
//! A connection is closed (and nothing else is affected) when it sends a
//! frame over the size limit, a frame that is not a request Strata serves,
//! nothing for `CONNECTION_IDLE_TIMEOUT`, or half a frame for
//! `PARTIAL_REQUEST_TIMEOUT`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::FuturesOrdered;
use futures::{SinkExt, StreamExt};
use kafka_protocol::messages::{ApiKey, ResponseKind};
use strata_protocol::frame::FrameCodec;
use strata_protocol::request::{self, RequestError};
use strata_protocol::{response, versions};
use tokio::net::TcpStream;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::dispatch::dispatch;
use super::error_code;
use crate::handler::Context;
use crate::limits::{
    CONNECTION_IDLE_TIMEOUT, IN_FLIGHT_REQUESTS_PER_CONNECTION, PARTIAL_REQUEST_TIMEOUT,
    REQUEST_BYTES_MAX,
};

/// A response being prepared: its frame, `None` when the client expects no
/// response, or an error that closes the connection.
type Answer = Pin<Box<dyn Future<Output = Result<Option<Bytes>, response::EncodeError>> + Send>>;

/// Serves `stream` until the client leaves, misbehaves, or `shutdown` fires.
pub async fn serve(context: Arc<Context>, stream: TcpStream, shutdown: CancellationToken) {
    let peer = stream
        .peer_addr()
        .map(|address| address.to_string())
        .unwrap_or_default();
    let _ = stream.set_nodelay(true);
    let (reader, writer) = stream.into_split();
    let codec = FrameCodec::new(REQUEST_BYTES_MAX);
    let mut frames = FramedRead::new(reader, codec);
    let mut responses = FramedWrite::new(writer, codec);
    let mut in_flight: FuturesOrdered<Answer> = FuturesOrdered::new();
    loop {
        let can_read = in_flight.len() < IN_FLIGHT_REQUESTS_PER_CONNECTION;
        let read_timeout = if frames.read_buffer().is_empty() {
            CONNECTION_IDLE_TIMEOUT
        } else {
            PARTIAL_REQUEST_TIMEOUT
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            Some(answer) = in_flight.next(), if !in_flight.is_empty() => {
                match answer {
                    Ok(Some(frame)) => {
                        if let Err(error) = responses.send(frame).await {
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
            next = tokio::time::timeout(read_timeout, frames.next()), if can_read => {
                let frame = match next {
                    Err(_elapsed) => {
                        info!(%peer, timeout = ?read_timeout, "closing a connection that went quiet");
                        return;
                    }
                    Ok(None) => break,
                    Ok(Some(Err(error))) => {
                        info!(%peer, %error, "closing connection");
                        return;
                    }
                    Ok(Some(Ok(frame))) => frame.freeze(),
                };
                match request::decode(frame) {
                    Ok(request) => {
                        let context = Arc::clone(&context);
                        let (api_key, api_version, correlation_id) = (request.api_key, request.api_version, request.correlation_id());
                        in_flight.push_back(Box::pin(async move {
                            match dispatch(&context, request).await {
                                Some(body) => response::encode(api_key, api_version, correlation_id, &body).map(Some),
                                None => Ok(None),
                            }
                        }));
                    }
                    Err(RequestError::UnsupportedVersion { api_key: ApiKey::ApiVersions, correlation_id, .. }) => {
                        // A client newer than this broker: answer in v0 with
                        // the supported versions so it can pick one.
                        let body = ResponseKind::ApiVersions(versions::api_versions_response(error_code::UNSUPPORTED_VERSION));
                        let answer = response::encode(ApiKey::ApiVersions, 0, correlation_id, &body).map(Some);
                        in_flight.push_back(Box::pin(async move { answer }));
                    }
                    Err(error) => {
                        info!(%peer, %error, "closing connection after a request it cannot serve");
                        return;
                    }
                }
            }
        }
    }
    // The client closed its side: finish what it asked for.
    while let Some(answer) = in_flight.next().await {
        let Ok(frame) = answer else { return };
        if let Some(frame) = frame {
            if responses.send(frame).await.is_err() {
                return;
            }
        }
    }
}
