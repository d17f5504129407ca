//! A saga-choreography event bus: services run a long business
//! transaction (order → payment → inventory → shipping) by reacting to each
//! other's events, with no orchestrator and no two-phase commit. When a
//! step fails, the steps before it are undone by their compensations, in
//! reverse order, each exactly once.
//!
//! - A saga type is data: a [`SagaDefinition`] lists its [`Step`]s, each
//!   with its success, failure and compensated event and a deadline.
//! - Events ([`Envelope`]) carry the saga id, type, event type, step,
//!   causation and correlation ids and a timestamp in record headers and a
//!   JSON payload in the value; the key is the saga id, so a saga's events
//!   stay in one partition, in order.
//! - A [`Service`] owns steps and registers their handlers; a
//!   [`Participant`] runs one instance of it as a member of the service's
//!   consumer group. Each round is one Strata transaction: the events read,
//!   the events the handlers produced, the service's state of each saga
//!   (a compacted topic, restored when a partition is assigned) and the
//!   input offsets commit together or not at all.
//! - Deadlines are durable: the owner of the step before holds each step's
//!   deadline in its saga state and fails the step when it passes. Its
//!   state commits with the offsets, so after a restart a deadline still
//!   fires, once.
//! - Handlers are retried with backoff. An action that keeps failing goes
//!   to the dead-letter topic and the saga is marked stuck (its deadline,
//!   if any, then fails the step); a compensation that keeps failing marks
//!   the saga stuck and goes on being retried: never skipped.
//! - [`SagaView`] derives every saga's status and timeline from the event
//!   topics alone; `logctl saga list|describe|metrics` print it.
//! - [`SagaTestkit`] runs services against an in-memory log, for tests of a
//!   saga without a broker.
//!
//! Architecture Invariant: a step's *first* outcome in the log is its
//! outcome, for every reader. A success that lands after the step's
//! deadline failed it is undone by its own participant.

mod decision;
mod definition;
mod envelope;
mod participant;
mod progress;
mod service;
mod starter;
mod testkit;
mod topics;
mod view;

pub use definition::{events_topic, saga_type_of_topic, SagaDefinition, Step, STUCK_EVENT_TYPE};
pub use envelope::{header, Envelope, EventKind, MalformedEvent};
pub use participant::{
    Participant, ParticipantConfig, ParticipantMetrics, DEAD_LETTER_ATTEMPTS, DEAD_LETTER_OFFSET,
    DEAD_LETTER_REASON, DEAD_LETTER_SERVICE,
};
pub use progress::{Change, RecordedOutcome, SagaProgress, SagaStatus, StepProgress};
pub use service::{Compensated, RetryPolicy, Service, StepContext, StepOutcome};
pub use starter::SagaStarter;
pub use testkit::SagaTestkit;
pub use topics::create_topics;
pub use view::{percentile, SagaRecord, SagaView, TimelineEntry};
