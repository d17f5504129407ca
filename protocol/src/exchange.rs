//! The asking side of a Kafka exchange: a request frame out (size, request
//! header, body), its response's header checked on the way in. Used by
//! every Strata component that sends Kafka requests: the client, the
//! follower fetcher, and the test harness.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use thiserror::Error;

use crate::frame::write_frame;

#[derive(Debug, Error)]
pub enum ExchangeError {
    #[error("cannot encode {api_key:?} v{version}: {reason}")]
    Encode {
        api_key: ApiKey,
        version: i16,
        reason: String,
    },
    #[error("malformed {api_key:?} v{version} response: {reason}")]
    Malformed {
        api_key: ApiKey,
        version: i16,
        reason: String,
    },
    #[error("response to request {got} while waiting for {expected}")]
    Correlation { got: i32, expected: i32 },
}

impl From<ExchangeError> for std::io::Error {
    fn from(error: ExchangeError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, error)
    }
}

/// Appends to `frame` the request `body` (which encodes itself at
/// `version`) for `api_key`, with its header.
pub fn encode_request(
    frame: &mut BytesMut,
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    client_id: Option<&StrBytes>,
    body: impl FnOnce(&mut BytesMut) -> anyhow::Result<()>,
) -> Result<(), ExchangeError> {
    let header = RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(client_id.cloned());
    write_frame(frame, |frame| {
        header.encode(frame, api_key.request_header_version(version))?;
        body(frame)
    })
    .map_err(|error| ExchangeError::Encode {
        api_key,
        version,
        reason: format!("{error:#}"),
    })
}

/// [`encode_request`] for a typed request.
pub fn encode<R: Request>(
    frame: &mut BytesMut,
    version: i16,
    correlation_id: i32,
    client_id: Option<&StrBytes>,
    request: &R,
) -> Result<(), ExchangeError> {
    encode_request(
        frame,
        api_key::<R>(),
        version,
        correlation_id,
        client_id,
        |frame| request.encode(frame, version),
    )
}

/// Reads a response frame's header (v0 for ApiVersions, whatever the
/// version, so a client can read it before it knows the broker) and returns
/// its correlation id; `body` is left at the response body.
pub fn decode_response_header(
    api_key: ApiKey,
    version: i16,
    body: &mut Bytes,
) -> Result<i32, ExchangeError> {
    let header_version = match api_key {
        ApiKey::ApiVersions => 0,
        _ => api_key.response_header_version(version),
    };
    ResponseHeader::decode(body, header_version)
        .map(|header| header.correlation_id)
        .map_err(|error| malformed(api_key, version, error))
}

/// The typed response to request `correlation_id` of type `R` at
/// `version`, from its frame.
pub fn decode<R: Request>(
    mut frame: Bytes,
    version: i16,
    correlation_id: i32,
) -> Result<R::Response, ExchangeError> {
    let api_key = api_key::<R>();
    let got = decode_response_header(api_key, version, &mut frame)?;
    if got != correlation_id {
        return Err(ExchangeError::Correlation {
            got,
            expected: correlation_id,
        });
    }
    R::Response::decode(&mut frame, version).map_err(|error| malformed(api_key, version, error))
}

/// The API key a request type carries.
pub fn api_key<R: Request>() -> ApiKey {
    ApiKey::try_from(R::KEY).expect("request types carry a known API key")
}

pub fn malformed(api_key: ApiKey, version: i16, error: anyhow::Error) -> ExchangeError {
    ExchangeError::Malformed {
        api_key,
        version,
        reason: format!("{error:#}"),
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::{
        ApiVersionsRequest, ApiVersionsResponse, FetchRequest, FetchResponse, ResponseKind,
    };

    use super::*;

    fn response_frame(
        api_key: ApiKey,
        version: i16,
        correlation_id: i32,
        body: &ResponseKind,
    ) -> Bytes {
        let frame = crate::response::encode(api_key, version, correlation_id, body).unwrap();
        let mut bytes: Vec<u8> = frame
            .chunks()
            .iter()
            .flat_map(|chunk| chunk.to_vec())
            .collect();
        bytes.drain(..4);
        Bytes::from(bytes)
    }

    #[test]
    fn a_request_reads_back_as_the_broker_decodes_it_and_responses_match_their_request() {
        let mut frame = BytesMut::new();
        let request = FetchRequest::default().with_max_wait_ms(321);
        encode(
            &mut frame,
            12,
            7,
            Some(&StrBytes::from_static_str("me")),
            &request,
        )
        .unwrap();
        let size = i32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(size, frame.len() - 4);
        let decoded = crate::request::decode(frame.split_off(4).freeze()).unwrap();
        assert_eq!(decoded.header.correlation_id, 7);
        assert_eq!(decoded.header.client_id.as_deref(), Some("me"));

        let body = ResponseKind::Fetch(FetchResponse::default().with_throttle_time_ms(9));
        let response =
            decode::<FetchRequest>(response_frame(ApiKey::Fetch, 12, 7, &body), 12, 7).unwrap();
        assert_eq!(response.throttle_time_ms, 9);
        assert!(matches!(
            decode::<FetchRequest>(response_frame(ApiKey::Fetch, 12, 8, &body), 12, 7),
            Err(ExchangeError::Correlation {
                got: 8,
                expected: 7
            })
        ));
        assert!(matches!(
            decode::<FetchRequest>(Bytes::from_static(&[0, 0]), 12, 7),
            Err(ExchangeError::Malformed { .. })
        ));
        // ApiVersions answers with header v0 even at v3.
        let body = ResponseKind::ApiVersions(ApiVersionsResponse::default());
        let frame = response_frame(ApiKey::ApiVersions, 3, 1, &body);
        assert!(decode::<ApiVersionsRequest>(frame, 3, 1).is_ok());
    }
}
