//! The SASL exchange of a connection on a SASL listener, served before
//! anything else on it: ApiVersions, SaslHandshake (the mechanism), then
//! the mechanism's messages: in SaslAuthenticate requests after a v1
//! handshake, as bare size-prefixed tokens after a v0 one (Kafka before
//! 1.0). Any other request before the exchange succeeds closes the
//! connection, as does a failed login (after `AUTHENTICATION_FAILURE_DELAY`).
//!
//! The caller bounds the whole exchange by `AUTHENTICATION_TIMEOUT` and its
//! frames by `UNAUTHENTICATED_REQUEST_BYTES_MAX`: a stranger holds little
//! memory for little time.

use bytes::Bytes;
use futures::StreamExt;
use kafka_protocol::messages::{
    ApiKey, RequestKind, ResponseKind, SaslAuthenticateResponse, SaslHandshakeResponse,
};
use strata_protocol::frame::FrameCodec;
use strata_protocol::request::{self, RequestError};
use strata_protocol::response;
use strata_protocol::sasl::{self, Mechanism, SaslError, ScramMechanism, ScramServer};
use strata_protocol::versions;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::FramedRead;
use tracing::{info, warn};

use super::Principal;
use crate::handler::{error_code, str_bytes, Context};
use crate::limits::AUTHENTICATION_FAILURE_DELAY;
use crate::server::connection::write_frame;

/// Where the exchange is.
enum Stage {
    /// Waiting for SaslHandshake to name a mechanism.
    Handshake,
    Plain,
    Scram(ScramServer),
}

/// Serves the exchange on a new connection. The principal it proved, or
/// `None` when the connection must close (the reason is logged).
pub async fn authenticate<R, W>(
    context: &Context,
    offered: &[Mechanism],
    frames: &mut FramedRead<R, FrameCodec>,
    writer: &mut W,
    peer: &str,
) -> Option<Principal>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut stage = Stage::Handshake;
    // After a v0 handshake the tokens come bare, without Kafka headers.
    let mut bare_tokens = false;
    loop {
        let frame = match frames.next().await? {
            Ok(frame) => frame.freeze(),
            Err(error) => {
                info!(%peer, %error, "closing a connection before authentication");
                return None;
            }
        };
        if bare_tokens {
            match step(context, &mut stage, &frame).await {
                Ok((answer, user)) => {
                    let mut token = bytes::BytesMut::with_capacity(4 + answer.len());
                    token.extend_from_slice(&(answer.len() as i32).to_be_bytes());
                    token.extend_from_slice(&answer);
                    writer.write_all(&token).await.ok()?;
                    writer.flush().await.ok()?;
                    if let Some(user) = user {
                        let principal = Principal::user(user);
                        info!(%peer, %principal, "authenticated");
                        return Some(principal);
                    }
                }
                Err(error) => {
                    // A bare-token exchange has no way to say why: close.
                    info!(%peer, reason = %error, "authentication failed");
                    tokio::time::sleep(AUTHENTICATION_FAILURE_DELAY).await;
                    return None;
                }
            }
            continue;
        }
        let request = match request::decode(frame) {
            Ok(request) => request,
            Err(RequestError::UnsupportedVersion {
                api_key: ApiKey::ApiVersions,
                correlation_id,
                ..
            }) => {
                let body = ResponseKind::ApiVersions(versions::api_versions_response(
                    error_code::UNSUPPORTED_VERSION,
                ));
                send(writer, ApiKey::ApiVersions, 0, correlation_id, &body, peer).await?;
                continue;
            }
            Err(error) => {
                info!(%peer, %error, "closing a connection before authentication");
                return None;
            }
        };
        let (api_key, api_version, correlation_id) = (
            request.api_key,
            request.api_version,
            request.correlation_id(),
        );
        let (body, outcome) = match (request.body, &mut stage) {
            (RequestKind::ApiVersions(_), _) => (
                ResponseKind::ApiVersions(versions::api_versions_response(0)),
                Ok(None),
            ),
            (RequestKind::SaslHandshake(handshake), Stage::Handshake) => {
                let names = offered
                    .iter()
                    .map(|mechanism| str_bytes(mechanism.name()))
                    .collect();
                let asked = handshake.mechanism.as_str();
                let chosen = Mechanism::parse(asked).filter(|known| offered.contains(known));
                let code = match chosen {
                    Some(Mechanism::Plain) => {
                        stage = Stage::Plain;
                        0
                    }
                    Some(Mechanism::Scram(scram)) => {
                        stage = Stage::Scram(ScramServer::new(scram));
                        0
                    }
                    None => error_code::UNSUPPORTED_SASL_MECHANISM,
                };
                let body = SaslHandshakeResponse::default()
                    .with_error_code(code)
                    .with_mechanisms(names);
                bare_tokens = code == 0 && api_version == 0;
                let outcome = if code == 0 {
                    Ok(None)
                } else {
                    Err(format!(
                        "asked for SASL mechanism '{asked}', which this listener does not offer"
                    ))
                };
                (ResponseKind::SaslHandshake(body), outcome)
            }
            (RequestKind::SaslAuthenticate(authenticate), Stage::Plain | Stage::Scram(_)) => {
                match step(context, &mut stage, &authenticate.auth_bytes).await {
                    Ok((answer, user)) => (
                        ResponseKind::SaslAuthenticate(
                            SaslAuthenticateResponse::default().with_auth_bytes(answer),
                        ),
                        Ok(user.map(Principal::user)),
                    ),
                    Err(error) => failed(error),
                }
            }
            (RequestKind::SaslHandshake(_), _) => (
                ResponseKind::SaslHandshake(
                    SaslHandshakeResponse::default()
                        .with_error_code(error_code::ILLEGAL_SASL_STATE),
                ),
                Err("sent a second SaslHandshake".to_string()),
            ),
            (RequestKind::SaslAuthenticate(_), Stage::Handshake) => (
                ResponseKind::SaslAuthenticate(
                    SaslAuthenticateResponse::default()
                        .with_error_code(error_code::ILLEGAL_SASL_STATE)
                        .with_error_message(Some(str_bytes(
                            "SaslAuthenticate before SaslHandshake",
                        ))),
                ),
                Err("sent SaslAuthenticate before SaslHandshake".to_string()),
            ),
            (_, _) => {
                warn!(%peer, api = ?api_key, "closing a connection that sent a request before authenticating");
                return None;
            }
        };
        if let Err(reason) = &outcome {
            info!(%peer, %reason, "authentication failed");
            tokio::time::sleep(AUTHENTICATION_FAILURE_DELAY).await;
        }
        send(writer, api_key, api_version, correlation_id, &body, peer).await?;
        match outcome {
            Ok(Some(principal)) => {
                info!(%peer, %principal, "authenticated");
                return Some(principal);
            }
            Ok(None) => {}
            Err(_) => return None,
        }
    }
}

/// A failed SaslAuthenticate: the answer, and the reason for the log.
fn failed(error: SaslError) -> (ResponseKind, Result<Option<Principal>, String>) {
    let body = SaslAuthenticateResponse::default()
        .with_error_code(error_code::SASL_AUTHENTICATION_FAILED)
        .with_error_message(Some(str_bytes(error.to_string())));
    (ResponseKind::SaslAuthenticate(body), Err(error.to_string()))
}

/// Checks a PLAIN message against the user's SCRAM credential (the
/// strongest the user has): the user it names.
async fn check_plain(context: &Context, message: &Bytes) -> Result<String, SaslError> {
    let (user, password) = sasl::parse_plain(message)?;
    let metadata = context.controller.metadata();
    let credential = [ScramMechanism::Sha512, ScramMechanism::Sha256]
        .into_iter()
        .find_map(|mechanism| Some((mechanism, metadata.scram_credential(&user, mechanism)?)));
    let Some((mechanism, credential)) = credential else {
        return Err(SaslError::InvalidCredentials);
    };
    // Thousands of HMAC rounds: off the runtime's threads.
    let matches =
        tokio::task::spawn_blocking(move || credential.matches_password(mechanism, &password))
            .await
            .unwrap_or(false);
    if matches {
        Ok(user)
    } else {
        Err(SaslError::InvalidCredentials)
    }
}

/// One round of the chosen mechanism: the answer, and the user once the
/// exchange succeeded.
async fn step(
    context: &Context,
    stage: &mut Stage,
    message: &Bytes,
) -> Result<(Bytes, Option<String>), SaslError> {
    match stage {
        Stage::Handshake => Err(SaslError::OutOfTurn("a SASL token before SaslHandshake")),
        Stage::Plain => {
            let user = check_plain(context, message).await?;
            Ok((Bytes::new(), Some(user)))
        }
        Stage::Scram(server) => scram_step(context, server, message),
    }
}

/// One SCRAM round: the answer, and the user once the exchange succeeded.
fn scram_step(
    context: &Context,
    server: &mut ScramServer,
    message: &Bytes,
) -> Result<(Bytes, Option<String>), SaslError> {
    if server.awaiting_client_first() {
        let metadata = context.controller.metadata();
        let mechanism = server.mechanism();
        let answer =
            server.client_first(message, |user| metadata.scram_credential(user, mechanism))?;
        Ok((Bytes::from(answer), None))
    } else {
        let (user, answer) = server.client_final(message)?;
        Ok((Bytes::from(answer), Some(user)))
    }
}

async fn send<W: AsyncWrite + Unpin>(
    writer: &mut W,
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
    body: &ResponseKind,
    peer: &str,
) -> Option<()> {
    let frame = match response::encode(api_key, api_version, correlation_id, body) {
        Ok(frame) => frame,
        Err(error) => {
            warn!(%peer, %error, "cannot encode an authentication answer; closing");
            return None;
        }
    };
    write_frame(writer, &frame).await.ok()
}
