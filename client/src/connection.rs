//! One connection to one broker (TCP, or TLS over TCP): requests are
//! pipelined (many in flight, matched to responses by correlation id),
//! versions are negotiated once with ApiVersions when the connection opens,
//! and on a SASL listener the client authenticates before anything else.
//!
//! Architecture invariant: a request is registered as pending before its
//! bytes are written, so a response can never arrive for an unknown id; when
//! the connection fails every pending request fails with the same error.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, SaslAuthenticateRequest, SaslHandshakeRequest,
};
use kafka_protocol::protocol::{Request, StrBytes};
use strata_protocol::exchange;
use strata_protocol::frame::{FrameCodec, FrameReader};
use strata_protocol::sasl::{self, Mechanism, ScramClient};
use strata_protocol::transport::{self, Stream};
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::oneshot;

use crate::cluster::{SaslSettings, Transport};
use crate::error::{Error, Result};

/// Largest response accepted; a larger size prefix means a confused peer.
pub(crate) const RESPONSE_BYTES_MAX: usize = 512 << 20;

/// API versions this client speaks: `(api, min, max)`. Requests are built for
/// every version in the range; the highest the broker also offers is used.
const CLIENT_APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 8, 9),
    (ApiKey::Fetch, 11, 12),
    (ApiKey::ListOffsets, 6, 7),
    (ApiKey::Metadata, 9, 12),
    (ApiKey::CreateTopics, 5, 7),
    (ApiKey::DeleteTopics, 4, 5),
    (ApiKey::CreatePartitions, 2, 3),
    (ApiKey::DescribeConfigs, 4, 4),
    (ApiKey::IncrementalAlterConfigs, 1, 1),
    (ApiKey::DescribeCluster, 0, 2),
    (ApiKey::DescribeQuorum, 0, 1),
    (ApiKey::FindCoordinator, 4, 4),
    (ApiKey::JoinGroup, 5, 9),
    (ApiKey::SyncGroup, 5, 5),
    (ApiKey::Heartbeat, 3, 4),
    (ApiKey::LeaveGroup, 3, 5),
    (ApiKey::OffsetCommit, 7, 8),
    (ApiKey::OffsetFetch, 6, 7),
    (ApiKey::ListGroups, 3, 4),
    (ApiKey::DescribeGroups, 3, 5),
    (ApiKey::DeleteGroups, 1, 2),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::ElectLeaders, 1, 2),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::AlterPartitionReassignments, 1, 1),
    (ApiKey::ListPartitionReassignments, 0, 0),
    (ApiKey::InitProducerId, 2, 4),
    (ApiKey::AddPartitionsToTxn, 3, 3),
    (ApiKey::AddOffsetsToTxn, 3, 4),
    (ApiKey::EndTxn, 3, 5),
    (ApiKey::TxnOffsetCommit, 3, 4),
    (ApiKey::WriteTxnMarkers, 1, 1),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 1, 2),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
];

type Pending = HashMap<i32, oneshot::Sender<Result<Bytes>>>;

struct Shared {
    pending: Pending,
    /// Set once the connection failed; later requests fail with it at once.
    failure: Option<Error>,
}

struct Writer {
    half: WriteHalf<Stream>,
    correlation_id: i32,
    frame: BytesMut,
}

pub(crate) struct Connection {
    address: String,
    client_id: StrBytes,
    writer: tokio::sync::Mutex<Writer>,
    shared: Arc<Mutex<Shared>>,
    /// Negotiated version per API key; absent when the broker lacks the API.
    versions: HashMap<i16, i16>,
    offered: HashMap<i16, (i16, i16)>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Connection {
    /// Connects (through TLS if `transport` says so), negotiates API
    /// versions, and authenticates with SASL if `transport` says so.
    pub(crate) async fn open(
        address: &str,
        client_id: &str,
        timeout: Duration,
        transport: &Transport,
    ) -> std::io::Result<Connection> {
        let stream = transport::connect(address, transport.tls.as_ref(), timeout).await?;
        let (read, write) = tokio::io::split(stream);
        let shared = Arc::new(Mutex::new(Shared {
            pending: HashMap::new(),
            failure: None,
        }));
        let reader = tokio::spawn(read_responses(
            read,
            address.to_string(),
            Arc::clone(&shared),
        ));
        let mut connection = Connection {
            address: address.to_string(),
            client_id: StrBytes::from_string(client_id.to_string()),
            writer: tokio::sync::Mutex::new(Writer {
                half: write,
                correlation_id: 0,
                frame: BytesMut::with_capacity(64 << 10),
            }),
            shared,
            versions: HashMap::new(),
            offered: HashMap::new(),
            reader,
        };
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("strata-client"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let response = tokio::time::timeout(timeout, async {
            connection
                .start_versioned(&request, 3)
                .await?
                .response()
                .await
        })
        .await
        .map_err(|_elapsed| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "ApiVersions timed out")
        })?
        .map_err(|error| match (&error, transport.tls.is_some()) {
            // A plaintext client on a TLS listener: the broker closes at
            // once (its TLS layer does not understand the request).
            (Error::Io { source, .. }, false)
                if source.kind() == std::io::ErrorKind::UnexpectedEof =>
            {
                std::io::Error::other(format!(
                    "{error} (if this listener uses TLS, connect with security.protocol SSL or SASL_SSL)"
                ))
            }
            _ => std::io::Error::other(error),
        })?;
        if response.error_code != 0 {
            return Err(std::io::Error::other(format!(
                "ApiVersions refused with error code {}",
                response.error_code
            )));
        }
        for api in &response.api_keys {
            connection
                .offered
                .insert(api.api_key, (api.min_version, api.max_version));
        }
        for &(api, min, max) in CLIENT_APIS {
            if let Some(&(offered_min, offered_max)) = connection.offered.get(&(api as i16)) {
                let version = max.min(offered_max);
                if version >= min && version >= offered_min {
                    connection.versions.insert(api as i16, version);
                }
            }
        }
        if let Some(sasl) = &transport.sasl {
            tokio::time::timeout(timeout, connection.authenticate(sasl))
                .await
                .map_err(|_elapsed| {
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "SASL authentication timed out",
                    )
                })??;
        }
        Ok(connection)
    }

    /// The SASL exchange: SaslHandshake names the mechanism, then
    /// SaslAuthenticate carries its messages. A refusal is
    /// `PermissionDenied`, naming the user and the broker's reason.
    async fn authenticate(&self, settings: &SaslSettings) -> std::io::Result<()> {
        let refused = |reason: String| {
            std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "SASL {} authentication as '{}' failed: {reason}",
                    settings.mechanism, settings.username
                ),
            )
        };
        let handshake = SaslHandshakeRequest::default()
            .with_mechanism(StrBytes::from_static_str(settings.mechanism.name()));
        let answer = self.exchange_while_opening(&handshake, 1).await?;
        if answer.error_code != 0 {
            let offered: Vec<&str> = answer.mechanisms.iter().map(|m| m.as_str()).collect();
            return Err(refused(format!(
                "the broker does not offer it (it offers {})",
                if offered.is_empty() {
                    "none".to_string()
                } else {
                    offered.join(", ")
                }
            )));
        }
        let version = match self.offered.get(&(ApiKey::SaslAuthenticate as i16)) {
            Some(&(_, max)) if max >= 1 => 1,
            Some(_) => 0,
            None => return Err(refused("the broker does not offer SaslAuthenticate".into())),
        };
        let round = |message: Vec<u8>| async move {
            let request = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(message));
            let answer = self.exchange_while_opening(&request, version).await?;
            if answer.error_code != 0 {
                let reason = answer
                    .error_message
                    .map(|message| message.to_string())
                    .unwrap_or_else(|| format!("error code {}", answer.error_code));
                return Err(refused(reason));
            }
            Ok(answer.auth_bytes)
        };
        match settings.mechanism {
            Mechanism::Plain => {
                round(sasl::plain_message(&settings.username, &settings.password)).await?;
            }
            Mechanism::Scram(mechanism) => {
                let mut scram = ScramClient::new(mechanism, &settings.username, &settings.password);
                let server_first = round(scram.client_first()).await?;
                let client_final = scram
                    .server_first(&server_first)
                    .map_err(|error| refused(error.to_string()))?;
                let server_final = round(client_final).await?;
                scram
                    .server_final(&server_final)
                    .map_err(|error| refused(error.to_string()))?;
            }
        }
        Ok(())
    }

    /// One exchange of the opening (SASL), at a fixed `version`.
    async fn exchange_while_opening<R: Request>(
        &self,
        request: &R,
        version: i16,
    ) -> std::io::Result<R::Response> {
        let sent = self.start_versioned(request, version).await;
        let answer = match sent {
            Ok(sent) => sent.response().await,
            Err(error) => Err(error),
        };
        answer.map_err(std::io::Error::other)
    }

    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.shared
            .lock()
            .expect("connection state")
            .failure
            .is_some()
    }

    /// The version to use for `api`, or an error naming what is missing.
    pub(crate) fn version(&self, api: ApiKey) -> Result<i16> {
        if let Some(&version) = self.versions.get(&(api as i16)) {
            return Ok(version);
        }
        let (_, min, max) = CLIENT_APIS
            .iter()
            .find(|(key, _, _)| *key == api)
            .copied()
            .expect("every API the client sends is in CLIENT_APIS");
        Err(Error::UnsupportedVersion {
            address: self.address.clone(),
            api: api_name(api),
            min,
            max,
            offered: match self.offered.get(&(api as i16)) {
                Some((min, max)) => format!("{min}..={max}"),
                None => "none".to_string(),
            },
        })
    }

    /// Sends `request` at the negotiated version and waits for its response.
    pub(crate) async fn send<R: Request>(&self, request: &R) -> Result<R::Response> {
        self.start(request).await?.response().await
    }

    /// Writes `request`; the response is awaited separately, so requests
    /// written one after another reach the broker in that order.
    pub(crate) async fn start<R: Request>(&self, request: &R) -> Result<Sent<R>> {
        let version = self.version(exchange::api_key::<R>())?;
        self.start_versioned(request, version).await
    }

    async fn start_versioned<R: Request>(&self, request: &R, version: i16) -> Result<Sent<R>> {
        let (sender, receiver) = oneshot::channel();
        let correlation_id = self.write(request, version, Some(sender)).await?;
        Ok(Sent {
            receiver,
            correlation_id,
            version,
            address: self.address.clone(),
            request: std::marker::PhantomData,
        })
    }

    /// Sends a request no response will come for (Produce with acks=0).
    pub(crate) async fn send_without_response<R: Request>(&self, request: &R) -> Result<()> {
        let version = self.version(exchange::api_key::<R>())?;
        self.write(request, version, None).await.map(drop)
    }

    async fn write<R: Request>(
        &self,
        request: &R,
        version: i16,
        response: Option<oneshot::Sender<Result<Bytes>>>,
    ) -> Result<i32> {
        let mut writer = self.writer.lock().await;
        writer.correlation_id = writer.correlation_id.wrapping_add(1);
        let correlation_id = writer.correlation_id;
        let frame = &mut writer.frame;
        frame.clear();
        exchange::encode(
            frame,
            version,
            correlation_id,
            Some(&self.client_id),
            request,
        )
        .map_err(|error| Error::Protocol {
            address: self.address.clone(),
            reason: error.to_string(),
        })?;
        {
            let mut shared = self.shared.lock().expect("connection state");
            if let Some(failure) = &shared.failure {
                return Err(failure.clone());
            }
            if let Some(response) = response {
                shared.pending.insert(correlation_id, response);
            }
        }
        let Writer { half, frame, .. } = &mut *writer;
        // TLS holds the last records until flushed (a no-op on plain TCP).
        let written = async {
            half.write_all(frame).await?;
            half.flush().await
        };
        if let Err(error) = written.await {
            let error = Error::Io {
                address: self.address.clone(),
                source: Arc::new(error),
            };
            fail_all(&self.shared, error.clone());
            return Err(error);
        }
        // A large request leaves a large buffer behind; keep it for the next
        // one (warm pages) unless it is far beyond the usual size.
        if frame.capacity() > 64 << 20 {
            *frame = BytesMut::with_capacity(64 << 10);
        }
        Ok(correlation_id)
    }
}

/// A request on the wire, waiting for its response.
pub(crate) struct Sent<R> {
    receiver: oneshot::Receiver<Result<Bytes>>,
    correlation_id: i32,
    version: i16,
    address: String,
    request: std::marker::PhantomData<fn() -> R>,
}

impl<R: Request> Sent<R> {
    pub(crate) async fn response(self) -> Result<R::Response> {
        let frame = self.receiver.await.map_err(|_closed| Error::Closed)??;
        exchange::decode::<R>(frame, self.version, self.correlation_id).map_err(|error| {
            Error::Protocol {
                address: self.address.clone(),
                reason: error.to_string(),
            }
        })
    }
}

pub(crate) fn api_name(api: ApiKey) -> &'static str {
    match api {
        ApiKey::Produce => "Produce",
        ApiKey::Fetch => "Fetch",
        ApiKey::ListOffsets => "ListOffsets",
        ApiKey::Metadata => "Metadata",
        ApiKey::CreateTopics => "CreateTopics",
        ApiKey::DeleteTopics => "DeleteTopics",
        ApiKey::CreatePartitions => "CreatePartitions",
        ApiKey::DescribeConfigs => "DescribeConfigs",
        ApiKey::IncrementalAlterConfigs => "IncrementalAlterConfigs",
        ApiKey::DescribeCluster => "DescribeCluster",
        ApiKey::ApiVersions => "ApiVersions",
        ApiKey::InitProducerId => "InitProducerId",
        ApiKey::DescribeProducers => "DescribeProducers",
        _ => "an API",
    }
}

fn fail_all(shared: &Mutex<Shared>, error: Error) {
    let mut shared = shared.lock().expect("connection state");
    if shared.failure.is_none() {
        shared.failure = Some(error.clone());
    }
    for (_, pending) in shared.pending.drain() {
        let _ = pending.send(Err(error.clone()));
    }
}

async fn read_responses(mut read: ReadHalf<Stream>, address: String, shared: Arc<Mutex<Shared>>) {
    let error = match read_loop(&mut read, &address, &shared).await {
        Ok(()) => std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed by the broker"),
        Err(error) => error,
    };
    fail_all(
        &shared,
        Error::Io {
            address,
            source: Arc::new(error),
        },
    );
}

/// Reads frames until the peer closes; each goes to the request waiting on
/// its correlation id. The frame body stays in the shared read buffer.
async fn read_loop(
    read: &mut ReadHalf<Stream>,
    address: &str,
    shared: &Mutex<Shared>,
) -> std::io::Result<()> {
    let mut frames = FrameReader::new(FrameCodec::new(RESPONSE_BYTES_MAX).reserving_whole_frames());
    loop {
        let Some(body) = frames.read(read).await? else {
            return Ok(());
        };
        let body = body.freeze();
        if body.len() < 4 {
            return Err(std::io::Error::other(format!(
                "{address} sent a response of {} bytes, too short for a header",
                body.len()
            )));
        }
        let correlation_id = i32::from_be_bytes(body[..4].try_into().expect("4 bytes"));
        let waiting = shared
            .lock()
            .expect("connection state")
            .pending
            .remove(&correlation_id);
        match waiting {
            Some(waiting) => {
                let _ = waiting.send(Ok(body));
            }
            None => {
                return Err(std::io::Error::other(format!(
                    "{address} answered correlation id {correlation_id}, which no request carries"
                )))
            }
        }
    }
}
