//! Response encoding: size prefix, header (v0 or v1 by API and version;
//! ApiVersions always v0, so a client that does not know the broker yet can
//! read it), body.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::Encodable;
use thiserror::Error;

use crate::frame::SIZE_PREFIX_BYTES;

#[derive(Debug, Error)]
#[error("cannot encode {api_key:?} v{api_version} response: {reason}")]
pub struct EncodeError {
    pub api_key: ApiKey,
    pub api_version: i16,
    pub reason: String,
}

/// Encodes a whole response frame, size prefix included.
pub fn encode(
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> Result<Bytes, EncodeError> {
    // kafka-protocol reports encoding errors as `anyhow::Error`.
    let failed = |error: anyhow::Error| EncodeError {
        api_key,
        api_version,
        reason: format!("{error:#}"),
    };
    let header_version = match api_key {
        ApiKey::ApiVersions => 0,
        _ => api_key.response_header_version(api_version),
    };
    let mut bytes = BytesMut::with_capacity(256);
    bytes.put_i32(0); // size, patched below
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut bytes, header_version)
        .map_err(failed)?;
    body.encode(&mut bytes, api_version).map_err(failed)?;
    let size = (bytes.len() - SIZE_PREFIX_BYTES) as i32;
    bytes[..SIZE_PREFIX_BYTES].copy_from_slice(&size.to_be_bytes());
    Ok(bytes.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::versions;

    #[test]
    fn api_versions_always_uses_header_v0_and_the_size_is_right() {
        let body = ResponseKind::ApiVersions(versions::api_versions_response(0));
        for api_version in 0..=3 {
            let frame = encode(ApiKey::ApiVersions, api_version, 5, &body).unwrap();
            let size = i32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
            assert_eq!(size, frame.len() - 4);
            assert_eq!(i32::from_be_bytes(frame[4..8].try_into().unwrap()), 5);
            if api_version >= 3 {
                // Flexible body, but still no tagged fields after the correlation id:
                // the next byte is the error code's high byte, not a tag count.
                assert_eq!(&frame[8..10], &[0, 0]);
            }
        }
    }
}
