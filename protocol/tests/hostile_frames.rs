//! Hostile frames decode to errors, never to a panic or an abort. This test
//! binary uses the allocator the broker uses, which is what keeps a claimed
//! array of two billion elements from aborting the process.

use bytes::Bytes;
use proptest::prelude::*;
use strata_protocol::alloc::ReserveLargeAllocator;
use strata_protocol::request::{self, RequestError};
use strata_protocol::versions::SUPPORTED_APIS;
use strata_protocol::ApiKey;

#[global_allocator]
static ALLOCATOR: ReserveLargeAllocator = ReserveLargeAllocator;

fn frame(api_key: ApiKey, api_version: i16, body: &[u8]) -> Bytes {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&(api_key as i16).to_be_bytes());
    bytes.extend_from_slice(&api_version.to_be_bytes());
    bytes.extend_from_slice(&42i32.to_be_bytes());
    bytes.extend_from_slice(&(-1i16).to_be_bytes()); // null client id
    bytes.extend_from_slice(body);
    Bytes::from(bytes)
}

#[test]
fn a_claimed_array_of_two_billion_topics_is_malformed_not_fatal() {
    // Metadata v0: the body is the topic array; claim i32::MAX topics.
    let error = request::decode(frame(ApiKey::Metadata, 0, &i32::MAX.to_be_bytes())).unwrap_err();
    assert!(
        matches!(
            error,
            RequestError::Malformed {
                correlation_id: 42,
                ..
            }
        ),
        "{error}"
    );
    // Produce v3: transactional id (null), acks, timeout, then the topic array.
    let mut body = Vec::new();
    body.extend_from_slice(&(-1i16).to_be_bytes());
    body.extend_from_slice(&1i16.to_be_bytes());
    body.extend_from_slice(&1000i32.to_be_bytes());
    body.extend_from_slice(&0x7fff_fff0i32.to_be_bytes());
    let error = request::decode(frame(ApiKey::Produce, 3, &body)).unwrap_err();
    assert!(matches!(error, RequestError::Malformed { .. }), "{error}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bodies_never_panic(
        api_index in 0..SUPPORTED_APIS.len(),
        version_offset in 0i16..20,
        body in proptest::collection::vec(any::<u8>(), 0..120),
    ) {
        let supported = SUPPORTED_APIS[api_index];
        let span = supported.max_version - supported.min_version + 1;
        let api_version = supported.min_version + version_offset % span;
        let _ = request::decode(frame(supported.api_key, api_version, &body));
    }

    #[test]
    fn arbitrary_frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = request::decode(Bytes::from(bytes));
    }
}
