//! Request decoding: header first (its version depends on the API and its
//! version), then the body, refusing APIs and versions Strata does not serve.
//!
//! Bytes left after a complete body are ignored, as Apache Kafka ignores
//! them: librdkafka 2.16 sends an all-topics Metadata v12 request with a
//! four-byte topic count where the compact form has one byte, and Kafka
//! serves it (see `tests/fixtures/`).

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use kafka_protocol::protocol::Decodable;
use thiserror::Error;

use crate::versions::{self, SupportedApi};

/// Bytes every request starts with: API key, API version, correlation id.
const FIXED_HEADER_BYTES: usize = 8;

/// A decoded request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub header: RequestHeader,
    pub api_key: ApiKey,
    pub api_version: i16,
    pub body: RequestKind,
    /// Bytes the frame held after the body, ignored.
    pub trailing_bytes: usize,
}

impl Request {
    pub fn correlation_id(&self) -> i32 {
        self.header.correlation_id
    }

    pub fn client_id(&self) -> &str {
        self.header.client_id.as_deref().unwrap_or("")
    }
}

/// Why a frame is not a request Strata can serve. All but the first carry
/// the correlation id, so the broker can answer or log against it.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("request of {len} bytes is too short for a header")]
    TooShort { len: usize },
    #[error("unknown API key {api_key}")]
    UnknownApiKey { api_key: i16, correlation_id: i32 },
    #[error("{api_key:?} is not served by this broker")]
    UnsupportedApi {
        api_key: ApiKey,
        correlation_id: i32,
    },
    #[error("{api_key:?} version {api_version} is not supported (this broker serves {min_version} to {max_version})")]
    UnsupportedVersion {
        api_key: ApiKey,
        api_version: i16,
        correlation_id: i32,
        min_version: i16,
        max_version: i16,
    },
    #[error("malformed {api_key:?} v{api_version} request: {reason}")]
    Malformed {
        api_key: ApiKey,
        api_version: i16,
        correlation_id: i32,
        reason: String,
    },
}

impl RequestError {
    pub fn correlation_id(&self) -> Option<i32> {
        match self {
            RequestError::TooShort { .. } => None,
            RequestError::UnknownApiKey { correlation_id, .. }
            | RequestError::UnsupportedApi { correlation_id, .. }
            | RequestError::UnsupportedVersion { correlation_id, .. }
            | RequestError::Malformed { correlation_id, .. } => Some(*correlation_id),
        }
    }
}

/// Decodes one frame (without its size prefix) into a request.
pub fn decode(mut frame: Bytes) -> Result<Request, RequestError> {
    if frame.len() < FIXED_HEADER_BYTES {
        return Err(RequestError::TooShort { len: frame.len() });
    }
    let raw_api_key = i16::from_be_bytes([frame[0], frame[1]]);
    let api_version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api_key = ApiKey::try_from(raw_api_key).map_err(|()| RequestError::UnknownApiKey {
        api_key: raw_api_key,
        correlation_id,
    })?;
    let Some(SupportedApi {
        min_version,
        max_version,
        ..
    }) = versions::supported(api_key)
    else {
        return Err(RequestError::UnsupportedApi {
            api_key,
            correlation_id,
        });
    };
    if !(min_version..=max_version).contains(&api_version) {
        return Err(RequestError::UnsupportedVersion {
            api_key,
            api_version,
            correlation_id,
            min_version,
            max_version,
        });
    }
    let malformed = |reason: String| RequestError::Malformed {
        api_key,
        api_version,
        correlation_id,
        reason,
    };
    let header_version = api_key.request_header_version(api_version);
    let header = RequestHeader::decode(&mut frame, header_version)
        .map_err(|error| malformed(format!("header: {error:#}")))?;
    let body = RequestKind::decode(api_key, &mut frame, api_version)
        .map_err(|error| malformed(format!("body: {error:#}")))?;
    Ok(Request {
        header,
        api_key,
        api_version,
        body,
        trailing_bytes: frame.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::messages::{MetadataRequest, RequestKind};
    use kafka_protocol::protocol::{Encodable, StrBytes};

    fn encode(api_key: ApiKey, api_version: i16, body: &RequestKind) -> Bytes {
        let header = RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(api_version)
            .with_correlation_id(77)
            .with_client_id(Some(StrBytes::from_static_str("test")));
        let mut bytes = BytesMut::new();
        header
            .encode(&mut bytes, api_key.request_header_version(api_version))
            .unwrap();
        body.encode(&mut bytes, api_version).unwrap();
        bytes.freeze()
    }

    #[test]
    fn metadata_requests_decode_at_every_supported_version() {
        for api_version in 0..=12 {
            let body = RequestKind::Metadata(MetadataRequest::default().with_topics(Some(vec![])));
            let request = decode(encode(ApiKey::Metadata, api_version, &body)).unwrap();
            assert_eq!(request.correlation_id(), 77);
            assert_eq!(request.client_id(), "test");
            assert_eq!(request.api_version, api_version);
            assert!(matches!(request.body, RequestKind::Metadata(_)));
        }
    }

    #[test]
    fn unknown_and_unsupported_requests_are_named() {
        let mut frame = vec![0x7f, 0x00, 0, 1, 0, 0, 0, 9];
        assert_eq!(
            decode(Bytes::from(frame.clone())),
            Err(RequestError::UnknownApiKey {
                api_key: 0x7f00,
                correlation_id: 9
            })
        );
        frame[0..2].copy_from_slice(&(ApiKey::Metadata as i16).to_be_bytes());
        frame[2..4].copy_from_slice(&99i16.to_be_bytes());
        assert!(matches!(
            decode(Bytes::from(frame.clone())),
            Err(RequestError::UnsupportedVersion {
                api_version: 99,
                ..
            })
        ));
        frame[0..2].copy_from_slice(&(ApiKey::CreateAcls as i16).to_be_bytes());
        assert!(matches!(
            decode(Bytes::from(frame)),
            Err(RequestError::UnsupportedApi { .. })
        ));
        assert_eq!(
            decode(Bytes::from_static(b"abc")),
            Err(RequestError::TooShort { len: 3 })
        );
    }

    #[test]
    fn truncated_bodies_are_malformed_and_padded_ones_served() {
        let body = RequestKind::Metadata(MetadataRequest::default().with_topics(None));
        let bytes = encode(ApiKey::Metadata, 4, &body);
        let cut = bytes.slice(..bytes.len() - 1);
        assert!(matches!(
            decode(cut),
            Err(RequestError::Malformed {
                correlation_id: 77,
                ..
            })
        ));
        let mut padded = bytes.to_vec();
        padded.push(0);
        let request = decode(Bytes::from(padded)).unwrap();
        assert_eq!(request.trailing_bytes, 1);
        assert_eq!(request.body, body);
    }

    /// Requests exactly as mainstream clients sent them, one per line of
    /// `tests/fixtures/requests.txt`: `client api_key api_version hex`.
    #[test]
    fn mainstream_clients_requests_decode() {
        let fixtures = include_str!("../tests/fixtures/requests.txt");
        let mut decoded = 0;
        for line in fixtures
            .lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
        {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [client, api_key, api_version, hex] = fields[..] else {
                panic!("bad fixture line {line:?}");
            };
            let frame = Bytes::from(hex_decode(hex));
            let request = decode(frame).unwrap_or_else(|error| panic!("{client}: {error}"));
            assert_eq!(
                request.api_key as i16,
                api_key.parse::<i16>().unwrap(),
                "{client}"
            );
            assert_eq!(
                request.api_version,
                api_version.parse::<i16>().unwrap(),
                "{client}"
            );
            decoded += 1;
        }
        assert!(decoded > 0);
    }

    #[test]
    fn librdkafkas_all_topics_metadata_asks_for_all_topics() {
        let fixtures = include_str!("../tests/fixtures/requests.txt");
        let line = fixtures
            .lines()
            .find(|line| line.starts_with("librdkafka-2.16-all-topics "))
            .unwrap();
        let request = decode(Bytes::from(hex_decode(
            line.split_whitespace().nth(3).unwrap(),
        )))
        .unwrap();
        let RequestKind::Metadata(metadata) = request.body else {
            panic!("{request:?}");
        };
        assert_eq!(metadata.topics, None, "null topics: every topic");
        assert_eq!(request.trailing_bytes, 3);
    }

    fn hex_decode(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(&hex[at..at + 2], 16).unwrap())
            .collect()
    }
}
