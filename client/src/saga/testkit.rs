//! A test fixture for saga authors: the services' handlers and the saga
//! rules run against an in-memory log and a clock the test moves, with no
//! broker. What it emits is what the same services emit on a cluster.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use serde_json::Value;

use super::decision::SagaState;
use super::definition::SagaDefinition;
use super::envelope::Envelope;
use super::progress::{SagaProgress, SagaStatus};
use super::service::{Clock, Output, RetryPolicy, Service};
use super::starter::first_event;

/// The fixture's clock: starts at 1 000 000 ms and moves only when told.
struct ManualClock(AtomicI64);

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A service in the fixture: its handlers, its states, how far it has read.
struct Member {
    service: Service,
    sagas: HashMap<String, SagaState>,
    delivered: usize,
}

/// Sagas of one definition run by services in memory.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use serde_json::json;
/// use strata_client::saga::{Compensated, SagaDefinition, SagaTestkit, Service, Step, StepOutcome};
///
/// let order = SagaDefinition::new("order")
///     .step(Step::new("order").succeeded("OrderPlaced").compensated("OrderCancelled"))
///     .step(Step::new("payment").succeeded("PaymentCharged").failed("PaymentDeclined"));
/// let orders = Service::new(&order, "orders")
///     .owns("order")
///     .compensation("order", |_| async { Ok(Compensated::new(json!({}))) });
/// let payments = Service::new(&order, "payments")
///     .action("payment", |context| async move {
///         Ok(if context.payload["amount"].as_i64() > Some(100) {
///             StepOutcome::failed("card declined")
///         } else {
///             StepOutcome::succeeded(json!({"charged": context.payload["amount"]}))
///         })
///     });
/// let mut kit = SagaTestkit::new(&order).service(orders).service(payments);
/// kit.start("o-1", json!({"amount": 30}));
/// kit.start("o-2", json!({"amount": 300}));
/// kit.run().await;
/// assert_eq!(kit.event_types("o-1"), ["OrderPlaced", "PaymentCharged"]);
/// assert_eq!(kit.event_types("o-2"), ["OrderPlaced", "PaymentDeclined", "OrderCancelled"]);
/// # }
/// ```
pub struct SagaTestkit {
    definition: SagaDefinition,
    members: Vec<Member>,
    log: Vec<Envelope>,
    clock: ManualClock,
    retry: RetryPolicy,
    deadline_grace: Duration,
    dead_letters: Vec<(Envelope, String)>,
}

impl SagaTestkit {
    pub fn new(definition: &SagaDefinition) -> SagaTestkit {
        SagaTestkit {
            definition: definition.clone(),
            members: Vec::new(),
            log: Vec::new(),
            clock: ManualClock(AtomicI64::new(1_000_000)),
            retry: RetryPolicy {
                attempts_max: 5,
                backoff: Duration::ZERO,
                backoff_max: Duration::ZERO,
            },
            deadline_grace: Duration::ZERO,
            dead_letters: Vec::new(),
        }
    }

    pub fn service(mut self, service: Service) -> SagaTestkit {
        assert_eq!(
            service.definition(),
            &self.definition,
            "service {:?} is of another saga",
            service.name()
        );
        self.members.push(Member {
            service,
            sagas: HashMap::new(),
            delivered: 0,
        });
        self
    }

    /// How handlers are retried (by default 5 tries, no backoff).
    pub fn retry(mut self, retry: RetryPolicy) -> SagaTestkit {
        self.retry = retry;
        self
    }

    /// How long past a deadline its watcher fails the step (default 0).
    pub fn deadline_grace(mut self, grace: Duration) -> SagaTestkit {
        self.deadline_grace = grace;
        self
    }

    /// Writes saga `saga_id`'s first event, as `SagaStarter::start` does.
    pub fn start(&mut self, saga_id: &str, payload: Value) {
        let now_ms = self.clock.now_ms();
        let start = first_event(
            &self.definition,
            saga_id,
            saga_id,
            "testkit",
            payload,
            now_ms,
        );
        self.log.push(start);
    }

    /// Moves the clock forward.
    pub fn advance(&mut self, by: Duration) {
        self.clock
            .0
            .fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }

    /// Delivers every event to every service until none has anything left
    /// to read, with the deadlines and retries due now fired once.
    pub async fn run(&mut self) {
        self.deliver_all().await;
        let grace_ms = self.deadline_grace.as_millis() as i64;
        for index in 0..self.members.len() {
            let now_ms = self.clock.now_ms();
            let member = &mut self.members[index];
            let mut ids: Vec<String> = member.sagas.keys().cloned().collect();
            ids.sort();
            for id in ids {
                let work = member.sagas[&id].due(now_ms, grace_ms);
                for work in work {
                    let state = member.sagas.get_mut(&id).expect("present");
                    let outputs = member
                        .service
                        .perform(state, work, &self.clock, &self.retry)
                        .await;
                    absorb(&mut self.log, &mut self.dead_letters, outputs);
                }
            }
        }
        self.deliver_all().await;
    }

    async fn deliver_all(&mut self) {
        loop {
            let mut delivered_any = false;
            for index in 0..self.members.len() {
                while self.members[index].delivered < self.log.len() {
                    delivered_any = true;
                    let event = self.log[self.members[index].delivered].clone();
                    self.members[index].delivered += 1;
                    let now_ms = self.clock.now_ms();
                    let member = &mut self.members[index];
                    let owned = member.service.owned_steps();
                    let first = !member.sagas.contains_key(&event.saga_id);
                    if first {
                        match SagaState::begin(&event, &owned) {
                            Some(state) => {
                                member.sagas.insert(event.saga_id.clone(), state);
                            }
                            None => continue,
                        }
                    }
                    let state = member.sagas.get_mut(&event.saga_id).expect("present");
                    for work in state.observe(&event, first, now_ms) {
                        let outputs = member
                            .service
                            .perform(state, work, &self.clock, &self.retry)
                            .await;
                        absorb(&mut self.log, &mut self.dead_letters, outputs);
                    }
                    if state.finished() {
                        member.sagas.remove(&event.saga_id);
                    }
                }
            }
            if !delivered_any {
                return;
            }
        }
    }

    /// Every event of `saga_id`, in log order.
    pub fn events(&self, saga_id: &str) -> Vec<&Envelope> {
        self.log
            .iter()
            .filter(|event| event.saga_id == saga_id)
            .collect()
    }

    /// The event types of `saga_id`'s events, in log order.
    pub fn event_types(&self, saga_id: &str) -> Vec<String> {
        self.events(saga_id)
            .into_iter()
            .map(|event| event.event_type.clone())
            .collect()
    }

    /// Where `saga_id` stands, as `logctl saga` would say.
    pub fn status(&self, saga_id: &str) -> Option<SagaStatus> {
        let events = self.events(saga_id);
        let (first, rest) = events.split_first()?;
        let mut progress = SagaProgress::new(first);
        for event in rest {
            progress.apply(event);
        }
        Some(progress.status())
    }

    /// The events handlers gave up on, with the reasons.
    pub fn dead_letters(&self) -> &[(Envelope, String)] {
        &self.dead_letters
    }

    /// `service`'s data for `saga_id`, while it keeps the saga.
    pub fn data(&self, service: &str, saga_id: &str) -> Option<&Value> {
        self.members
            .iter()
            .find(|member| member.service.name() == service)?
            .sagas
            .get(saga_id)
            .map(|state| &state.data)
    }
}

fn absorb(
    log: &mut Vec<Envelope>,
    dead_letters: &mut Vec<(Envelope, String)>,
    outputs: Vec<Output>,
) {
    for output in outputs {
        match output {
            Output::Event(event) => log.push(event),
            Output::DeadLetter { event, reason, .. } => dead_letters.push((event, reason)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::saga::{Compensated, Step, StepOutcome};

    fn trip() -> SagaDefinition {
        SagaDefinition::new("trip")
            .step(
                Step::new("booking")
                    .succeeded("TripBooked")
                    .compensated("TripCancelled"),
            )
            .step(
                Step::new("flight")
                    .succeeded("FlightReserved")
                    .failed("FlightFailed")
                    .compensated("FlightReleased")
                    .timeout(Duration::from_secs(5)),
            )
            .step(
                Step::new("hotel")
                    .succeeded("HotelReserved")
                    .failed("HotelFailed")
                    .compensated("HotelReleased")
                    .timeout(Duration::from_secs(5)),
            )
    }

    fn booking() -> Service {
        Service::new(&trip(), "booking")
            .owns("booking")
            .compensation("booking", |_| async { Ok(Compensated::new(json!({}))) })
    }

    fn flights(released: Arc<AtomicU32>) -> Service {
        Service::new(&trip(), "flights")
            .action("flight", |context| async move {
                Ok(StepOutcome::succeeded(context.payload).with_data(json!({"seat": "12A"})))
            })
            .compensation("flight", move |context| {
                let released = Arc::clone(&released);
                async move {
                    assert_eq!(
                        context.data,
                        json!({"seat": "12A"}),
                        "its own data comes back"
                    );
                    released.fetch_add(1, Ordering::SeqCst);
                    Ok(Compensated::new(json!({"seat": "12A"})))
                }
            })
    }

    #[tokio::test]
    async fn a_failure_runs_each_compensation_once_in_reverse() {
        let released = Arc::new(AtomicU32::new(0));
        let hotels = Service::new(&trip(), "hotels").action("hotel", |context| async move {
            Ok(match context.payload["city"].as_str() {
                Some("Atlantis") => StepOutcome::failed("no such city"),
                _ => StepOutcome::succeeded(json!({})),
            })
        });
        let mut kit = SagaTestkit::new(&trip())
            .service(booking())
            .service(flights(Arc::clone(&released)))
            .service(hotels);
        kit.start("t1", json!({"city": "Lisbon"}));
        kit.start("t2", json!({"city": "Atlantis"}));
        kit.run().await;
        assert_eq!(
            kit.event_types("t1"),
            ["TripBooked", "FlightReserved", "HotelReserved"]
        );
        assert_eq!(kit.status("t1"), Some(SagaStatus::Completed));
        assert_eq!(
            kit.event_types("t2"),
            [
                "TripBooked",
                "FlightReserved",
                "HotelFailed",
                "FlightReleased",
                "TripCancelled"
            ]
        );
        assert_eq!(kit.status("t2"), Some(SagaStatus::Compensated));
        assert_eq!(released.load(Ordering::SeqCst), 1);
        assert_eq!(kit.events("t2")[2].reason.as_deref(), Some("no such city"));
    }

    #[tokio::test]
    async fn a_missing_service_times_out_and_compensates() {
        let released = Arc::new(AtomicU32::new(0));
        let mut kit = SagaTestkit::new(&trip())
            .service(booking())
            .service(flights(Arc::clone(&released)));
        kit.start("t1", json!({}));
        kit.run().await;
        assert_eq!(kit.status("t1"), Some(SagaStatus::Running));
        kit.advance(Duration::from_millis(4_999));
        kit.run().await;
        assert_eq!(
            kit.status("t1"),
            Some(SagaStatus::Running),
            "not before the deadline"
        );
        kit.advance(Duration::from_millis(1));
        kit.run().await;
        let events = kit.events("t1");
        assert_eq!(events[2].event_type, "HotelFailed");
        assert!(events[2]
            .reason
            .as_deref()
            .unwrap()
            .contains("deadline passed"));
        assert_eq!(
            events[2].service, "flights",
            "the step before watches the deadline"
        );
        assert_eq!(kit.status("t1"), Some(SagaStatus::Compensated));
        kit.advance(Duration::from_secs(60));
        kit.run().await;
        assert_eq!(kit.events("t1").len(), 5, "a deadline fires once");
    }

    #[tokio::test]
    async fn a_poison_event_is_dead_lettered_and_the_saga_is_stuck_then_compensated() {
        let released = Arc::new(AtomicU32::new(0));
        let hotels = Service::new(&trip(), "hotels")
            .action("hotel", |_| async { anyhow::bail!("hotel API down") });
        let mut kit = SagaTestkit::new(&trip())
            .service(booking())
            .service(flights(Arc::clone(&released)))
            .service(hotels);
        kit.start("t1", json!({}));
        kit.run().await;
        assert_eq!(kit.status("t1"), Some(SagaStatus::Stuck));
        assert_eq!(kit.dead_letters().len(), 1);
        assert!(kit.dead_letters()[0]
            .1
            .contains("failed 5 times: hotel API down"));
        assert_eq!(kit.dead_letters()[0].0.event_type, "FlightReserved");
        kit.advance(Duration::from_secs(5));
        kit.run().await;
        assert_eq!(
            kit.status("t1"),
            Some(SagaStatus::Compensated),
            "the deadline undoes it"
        );
    }

    #[tokio::test]
    async fn a_failing_compensation_is_retried_never_skipped() {
        let attempts = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&attempts);
        let flights = Service::new(&trip(), "flights")
            .action("flight", |_| async {
                Ok(StepOutcome::succeeded(json!({})))
            })
            .compensation("flight", move |_| {
                let attempts = Arc::clone(&counted);
                async move {
                    if attempts.fetch_add(1, Ordering::SeqCst) < 7 {
                        anyhow::bail!("airline API down")
                    }
                    Ok(Compensated::new(json!({})))
                }
            });
        let hotels = Service::new(&trip(), "hotels")
            .action("hotel", |_| async { Ok(StepOutcome::failed("full")) });
        let mut kit = SagaTestkit::new(&trip())
            .service(booking())
            .service(flights)
            .service(hotels);
        kit.start("t1", json!({}));
        kit.run().await;
        // Five tries in place, then one more each time it comes due.
        assert_eq!(attempts.load(Ordering::SeqCst), 6);
        assert_eq!(kit.status("t1"), Some(SagaStatus::Stuck));
        assert_eq!(kit.dead_letters().len(), 1);
        assert_eq!(
            kit.data("booking", "t1"),
            Some(&Value::Null),
            "step 0 waits"
        );
        kit.run().await;
        assert_eq!(kit.status("t1"), Some(SagaStatus::Stuck));
        kit.run().await;
        assert_eq!(attempts.load(Ordering::SeqCst), 8);
        assert_eq!(kit.status("t1"), Some(SagaStatus::Compensated));
        assert_eq!(kit.dead_letters().len(), 1, "stuck is reported once");
        let types = kit.event_types("t1");
        assert_eq!(types.iter().filter(|t| *t == "FlightReleased").count(), 1);
        assert_eq!(types.last().map(String::as_str), Some("TripCancelled"));
    }
}
