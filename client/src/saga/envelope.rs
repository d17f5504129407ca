//! A saga event as it travels: the envelope in record headers, the payload
//! (JSON) in the value, the saga id as the key so that one saga's events stay
//! in one partition, in order.

use std::fmt;

use bytes::Bytes;
use serde_json::Value;

use crate::{ConsumerRecord, Header};

/// What an event says about its step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The step's action succeeded (step 0's success starts the saga).
    Succeeded,
    /// The step's action failed, or its deadline passed first.
    Failed,
    /// The step's compensation undid its action.
    Compensated,
    /// A participant gave up on the step's action or compensation after its
    /// retries and sent the event to the dead-letter topic.
    Stuck,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Succeeded => "succeeded",
            EventKind::Failed => "failed",
            EventKind::Compensated => "compensated",
            EventKind::Stuck => "stuck",
        }
    }

    fn parse(text: &str) -> Option<EventKind> {
        Some(match text {
            "succeeded" => EventKind::Succeeded,
            "failed" => EventKind::Failed,
            "compensated" => EventKind::Compensated,
            "stuck" => EventKind::Stuck,
            _ => return None,
        })
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The header names of the envelope.
pub mod header {
    pub const SAGA_ID: &str = "saga-id";
    pub const SAGA_TYPE: &str = "saga-type";
    pub const EVENT_TYPE: &str = "saga-event";
    pub const EVENT_ID: &str = "saga-event-id";
    pub const STEP_INDEX: &str = "saga-step";
    pub const STEP_COUNT: &str = "saga-steps";
    pub const KIND: &str = "saga-kind";
    pub const CAUSATION_ID: &str = "saga-causation-id";
    pub const CORRELATION_ID: &str = "saga-correlation-id";
    pub const TIMESTAMP_MS: &str = "saga-time-ms";
    pub const NEXT_DEADLINE_MS: &str = "saga-next-deadline-ms";
    pub const SERVICE: &str = "saga-service";
    pub const REASON: &str = "saga-reason";
}

/// One saga event: who it is about, what it says, what caused it.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub saga_id: String,
    pub saga_type: String,
    /// The definition's name for the event, e.g. `PaymentCharged`.
    pub event_type: String,
    /// Unique per event.
    pub event_id: String,
    pub step_index: u32,
    /// How many steps the saga has: with it, any reader can tell a
    /// completed saga without the definition.
    pub step_count: u32,
    pub kind: EventKind,
    /// The event this one reacts to (the saga's first event names itself).
    pub causation_id: String,
    /// Shared by every event of the saga: the caller's request id, or the
    /// saga id.
    pub correlation_id: String,
    pub timestamp_ms: i64,
    /// On a success: when the next step's deadline passes (if it has one).
    pub next_deadline_ms: Option<i64>,
    /// The service that wrote the event.
    pub service: String,
    /// Why a step failed or got stuck.
    pub reason: Option<String>,
    pub payload: Value,
}

/// Why a record is not a saga event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a saga event: {0}")]
pub struct MalformedEvent(pub String);

impl Envelope {
    /// The record's headers and JSON value.
    pub fn encode(&self) -> (Vec<(&'static str, String)>, Vec<u8>) {
        let mut headers = vec![
            (header::SAGA_ID, self.saga_id.clone()),
            (header::SAGA_TYPE, self.saga_type.clone()),
            (header::EVENT_TYPE, self.event_type.clone()),
            (header::EVENT_ID, self.event_id.clone()),
            (header::STEP_INDEX, self.step_index.to_string()),
            (header::STEP_COUNT, self.step_count.to_string()),
            (header::KIND, self.kind.as_str().to_string()),
            (header::CAUSATION_ID, self.causation_id.clone()),
            (header::CORRELATION_ID, self.correlation_id.clone()),
            (header::TIMESTAMP_MS, self.timestamp_ms.to_string()),
            (header::SERVICE, self.service.clone()),
        ];
        if let Some(deadline_ms) = self.next_deadline_ms {
            headers.push((header::NEXT_DEADLINE_MS, deadline_ms.to_string()));
        }
        if let Some(reason) = &self.reason {
            headers.push((header::REASON, reason.clone()));
        }
        let value = serde_json::to_vec(&self.payload).expect("a JSON value serializes");
        (headers, value)
    }

    /// Reads an event back from a record.
    pub fn decode(record: &ConsumerRecord) -> Result<Envelope, MalformedEvent> {
        Envelope::from_parts(&record.headers, record.value.as_ref())
    }

    pub fn from_parts(
        headers: &[(String, Option<Bytes>)],
        value: Option<&Bytes>,
    ) -> Result<Envelope, MalformedEvent> {
        let find = |name: &str| -> Option<&str> {
            headers
                .iter()
                .rev()
                .find(|(key, _)| key == name)
                .and_then(|(_, value)| value.as_deref())
                .and_then(|value| std::str::from_utf8(value).ok())
        };
        let required = |name: &str| {
            find(name)
                .map(str::to_string)
                .ok_or_else(|| MalformedEvent(format!("header {name} is missing")))
        };
        let number = |name: &str| -> Result<i64, MalformedEvent> {
            required(name)?
                .parse()
                .map_err(|error| MalformedEvent(format!("header {name}: {error}")))
        };
        let kind_text = required(header::KIND)?;
        let kind = EventKind::parse(&kind_text)
            .ok_or_else(|| MalformedEvent(format!("unknown kind {kind_text:?}")))?;
        let step_index = u32::try_from(number(header::STEP_INDEX)?)
            .map_err(|error| MalformedEvent(format!("header {}: {error}", header::STEP_INDEX)))?;
        let step_count = u32::try_from(number(header::STEP_COUNT)?)
            .map_err(|error| MalformedEvent(format!("header {}: {error}", header::STEP_COUNT)))?;
        if step_index >= step_count {
            return Err(MalformedEvent(format!(
                "step {step_index} of a saga of {step_count} steps"
            )));
        }
        let next_deadline_ms = match find(header::NEXT_DEADLINE_MS) {
            None => None,
            Some(_) => Some(number(header::NEXT_DEADLINE_MS)?),
        };
        let payload = match value {
            None => Value::Null,
            Some(bytes) => serde_json::from_slice(bytes)
                .map_err(|error| MalformedEvent(format!("payload is not JSON: {error}")))?,
        };
        Ok(Envelope {
            saga_id: required(header::SAGA_ID)?,
            saga_type: required(header::SAGA_TYPE)?,
            event_type: required(header::EVENT_TYPE)?,
            event_id: required(header::EVENT_ID)?,
            step_index,
            step_count,
            kind,
            causation_id: required(header::CAUSATION_ID)?,
            correlation_id: required(header::CORRELATION_ID)?,
            timestamp_ms: number(header::TIMESTAMP_MS)?,
            next_deadline_ms,
            service: required(header::SERVICE)?,
            reason: find(header::REASON).map(str::to_string),
            payload,
        })
    }
}

/// Borrows encoded headers as the producer takes them.
pub(crate) fn borrow_headers<'a>(headers: &'a [(&'static str, String)]) -> Vec<Header<'a>> {
    headers
        .iter()
        .map(|(key, value)| Header {
            key,
            value: Some(value.as_bytes()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        Envelope {
            saga_id: "order-7".into(),
            saga_type: "order".into(),
            event_type: "PaymentCharged".into(),
            event_id: "e-2".into(),
            step_index: 1,
            step_count: 4,
            kind: EventKind::Succeeded,
            causation_id: "e-1".into(),
            correlation_id: "req-9".into(),
            timestamp_ms: 1_700_000_000_000,
            next_deadline_ms: Some(1_700_000_005_000),
            service: "payment".into(),
            reason: None,
            payload: serde_json::json!({"amount": 12}),
        }
    }

    fn as_record_parts(envelope: &Envelope) -> (Vec<(String, Option<Bytes>)>, Bytes) {
        let (headers, value) = envelope.encode();
        let headers = headers
            .into_iter()
            .map(|(key, value)| (key.to_string(), Some(Bytes::from(value))))
            .collect();
        (headers, Bytes::from(value))
    }

    #[test]
    fn an_envelope_survives_the_round_trip() {
        let envelope = sample();
        let (headers, value) = as_record_parts(&envelope);
        assert_eq!(Envelope::from_parts(&headers, Some(&value)), Ok(envelope));
    }

    #[test]
    fn records_without_the_envelope_or_with_bad_values_are_refused() {
        let (mut headers, value) = as_record_parts(&sample());
        assert!(Envelope::from_parts(&[], Some(&value)).is_err());
        let not_json = Bytes::from_static(b"{nope");
        assert!(Envelope::from_parts(&headers, Some(&not_json))
            .unwrap_err()
            .0
            .contains("not JSON"));
        headers.retain(|(key, _)| key != header::STEP_INDEX);
        headers.push((header::STEP_INDEX.into(), Some(Bytes::from_static(b"4"))));
        assert!(Envelope::from_parts(&headers, Some(&value))
            .unwrap_err()
            .0
            .contains("step 4 of a saga of 4"));
    }
}
