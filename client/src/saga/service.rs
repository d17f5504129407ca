//! A service's part in a saga: the handlers it registers for the steps
//! it owns, and how a piece of [`Work`] runs them (retries with backoff,
//! deadlines, giving up) and turns their answers into events.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::decision::{Action, Compensation, SagaState, Work};
use super::definition::SagaDefinition;
use super::envelope::{Envelope, EventKind};

/// What a handler is given.
#[derive(Debug, Clone)]
pub struct StepContext {
    pub saga_id: String,
    pub correlation_id: String,
    /// The step's name.
    pub step: String,
    /// For an action: the payload of the success that triggered it. For a
    /// compensation: the payload of the step's own success.
    pub payload: Value,
    /// The service's data for this saga (`null` at first).
    pub data: Value,
    /// 1 on the first try.
    pub attempt: u32,
}

/// An action's answer: the step succeeded (with the payload of its success
/// event) or failed for a business reason (which is not retried).
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutcome {
    result: Result<Value, String>,
    data: Option<Value>,
}

impl StepOutcome {
    pub fn succeeded(payload: Value) -> StepOutcome {
        StepOutcome {
            result: Ok(payload),
            data: None,
        }
    }

    pub fn failed(reason: impl Into<String>) -> StepOutcome {
        StepOutcome {
            result: Err(reason.into()),
            data: None,
        }
    }

    /// Replaces the service's data for the saga.
    pub fn with_data(mut self, data: Value) -> StepOutcome {
        self.data = Some(data);
        self
    }
}

/// A compensation's answer: the payload of the compensated event.
#[derive(Debug, Clone, PartialEq)]
pub struct Compensated {
    payload: Value,
    data: Option<Value>,
}

impl Compensated {
    pub fn new(payload: Value) -> Compensated {
        Compensated {
            payload,
            data: None,
        }
    }

    /// Replaces the service's data for the saga.
    pub fn with_data(mut self, data: Value) -> Compensated {
        self.data = Some(data);
        self
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type ActionHandler =
    Arc<dyn Fn(StepContext) -> BoxFuture<anyhow::Result<StepOutcome>> + Send + Sync>;
type CompensationHandler =
    Arc<dyn Fn(StepContext) -> BoxFuture<anyhow::Result<Compensated>> + Send + Sync>;

#[derive(Clone, Default)]
struct StepHandlers {
    action: Option<ActionHandler>,
    compensation: Option<CompensationHandler>,
}

/// How hard a service tries before giving up on a handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries of an action (or of a compensation before the saga is
    /// reported stuck; compensations go on being retried after that).
    pub attempts_max: u32,
    /// The wait after the first failure; doubled after each further one.
    pub backoff: Duration,
    pub backoff_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            attempts_max: 5,
            backoff: Duration::from_millis(20),
            backoff_max: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    fn backoff_after(&self, attempt: u32) -> Duration {
        let doubled = self
            .backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        doubled.min(self.backoff_max)
    }
}

/// What running some work produced.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Output {
    Event(Envelope),
    /// The event a handler gave up on, for the dead-letter topic.
    DeadLetter {
        event: Envelope,
        reason: String,
        attempts: u32,
    },
}

/// The clock work runs against: the system's, or the test fixture's.
pub(crate) trait Clock: Send + Sync {
    fn now_ms(&self) -> i64;
}

pub(crate) struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_millis() as i64
    }
}

/// A service: its name and the handlers of the steps it owns.
#[derive(Clone)]
pub struct Service {
    definition: Arc<SagaDefinition>,
    name: String,
    steps: BTreeMap<u32, StepHandlers>,
}

impl Service {
    pub fn new(definition: &SagaDefinition, name: &str) -> Service {
        assert!(
            !name.is_empty() && !name.contains('.'),
            "a service name is not empty and has no '.' (it names topics): {name:?}"
        );
        Service {
            definition: Arc::new(definition.clone()),
            name: name.to_string(),
            steps: BTreeMap::new(),
        }
    }

    fn step_index(&self, step: &str) -> u32 {
        self.definition
            .step_index(step)
            .unwrap_or_else(|| panic!("saga {:?} has no step {step:?}", self.definition.name))
    }

    /// Owns `step` without handlers: step 0 (the caller's own work before
    /// `start`) with nothing to undo, or a step whose compensation is a no-op.
    pub fn owns(mut self, step: &str) -> Service {
        let index = self.step_index(step);
        self.steps.entry(index).or_default();
        self
    }

    /// Runs `handler` when `step` is triggered. An `Err` is retried with
    /// backoff; [`StepOutcome::failed`] fails the step without retrying.
    pub fn action<F, Fut>(mut self, step: &str, handler: F) -> Service
    where
        F: Fn(StepContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<StepOutcome>> + Send + 'static,
    {
        let index = self.step_index(step);
        assert!(
            index > 0,
            "step 0 starts the saga: its action is the caller's, before `SagaStarter::start`"
        );
        self.steps.entry(index).or_default().action =
            Some(Arc::new(move |context| Box::pin(handler(context))));
        self
    }

    /// Runs `handler` to undo `step` when a later step fails. An `Err` is
    /// retried, never skipped.
    pub fn compensation<F, Fut>(mut self, step: &str, handler: F) -> Service
    where
        F: Fn(StepContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<Compensated>> + Send + 'static,
    {
        let index = self.step_index(step);
        self.steps.entry(index).or_default().compensation =
            Some(Arc::new(move |context| Box::pin(handler(context))));
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn definition(&self) -> &SagaDefinition {
        &self.definition
    }

    /// The indexes of the steps this service owns.
    pub(crate) fn owned_steps(&self) -> Vec<u32> {
        self.steps.keys().copied().collect()
    }

    /// Checks that every step after the first has an action somewhere in
    /// `services` and each step has exactly one owner.
    pub fn check_coverage(services: &[&Service]) -> Result<(), String> {
        let Some(first) = services.first() else {
            return Err("no services".into());
        };
        let definition = &first.definition;
        for (index, step) in definition.steps.iter().enumerate() {
            let owners: Vec<&str> = services
                .iter()
                .filter(|service| service.steps.contains_key(&(index as u32)))
                .map(|service| service.name.as_str())
                .collect();
            if owners.len() != 1 {
                return Err(format!(
                    "step {:?} has owners {owners:?}; it needs one",
                    step.name
                ));
            }
            let handlers = services
                .iter()
                .find_map(|service| service.steps.get(&(index as u32)))
                .expect("an owner");
            if index > 0 && handlers.action.is_none() {
                return Err(format!("step {:?} has no action", step.name));
            }
        }
        Ok(())
    }

    /// What a handler of `step` of `state`'s saga is given.
    fn context(&self, state: &SagaState, step: u32, payload: &Value, attempt: u32) -> StepContext {
        StepContext {
            saga_id: state.saga_id.clone(),
            correlation_id: state.correlation_id.clone(),
            step: self.definition.steps[step as usize].name.clone(),
            payload: payload.clone(),
            data: state.data.clone(),
            attempt,
        }
    }

    /// An event of this service about `step` of `state`'s saga.
    fn event(
        &self,
        state: &SagaState,
        step: u32,
        kind: EventKind,
        causation_id: &str,
        now_ms: i64,
    ) -> Envelope {
        let definition = &self.definition;
        Envelope {
            saga_id: state.saga_id.clone(),
            saga_type: definition.name.clone(),
            event_type: definition.steps[step as usize].event_type(kind).to_string(),
            event_id: new_event_id(),
            step_index: step,
            step_count: definition.step_count(),
            kind,
            causation_id: causation_id.to_string(),
            correlation_id: state.correlation_id.clone(),
            timestamp_ms: now_ms,
            next_deadline_ms: None,
            service: self.name.clone(),
            reason: None,
            payload: Value::Null,
        }
    }

    /// Runs `work` for `state`'s saga: calls the handler (retrying), updates
    /// `state` and returns the events to write.
    pub(crate) async fn perform(
        &self,
        state: &mut SagaState,
        work: Work,
        clock: &dyn Clock,
        retry: &RetryPolicy,
    ) -> Vec<Output> {
        match work {
            Work::Act { step } => self.act(state, step, clock, retry).await,
            Work::Compensate { step } => self.compensate(state, step, clock, retry).await,
            Work::FireDeadline { step } => {
                let now_ms = clock.now_ms();
                let watcher = state
                    .owned
                    .get_mut(&(step - 1))
                    .expect("the watcher owns the step before");
                let deadline_ms = watcher.next_deadline_ms.take();
                let cause = watcher
                    .succeeded
                    .as_ref()
                    .map(|(id, _)| id.clone())
                    .unwrap_or_default();
                let mut event = self.event(state, step, EventKind::Failed, &cause, now_ms);
                event.reason = Some(format!(
                    "deadline passed: no outcome by {} ms after it was triggered",
                    deadline_ms.unwrap_or(now_ms)
                        - state.progress.steps[step as usize]
                            .triggered_ms
                            .unwrap_or(now_ms)
                ));
                vec![Output::Event(event)]
            }
        }
    }

    async fn act(
        &self,
        state: &mut SagaState,
        step: u32,
        clock: &dyn Clock,
        retry: &RetryPolicy,
    ) -> Vec<Output> {
        let handler = self.steps[&step]
            .action
            .clone()
            .expect("checked: every step after the first has an action");
        let own = &state.owned[&step];
        let (cause, payload, deadline_ms) = own.trigger.clone().expect("acting on a trigger");
        let mut attempt = 0;
        let mut last_error = String::new();
        while attempt < retry.attempts_max {
            attempt += 1;
            let context = self.context(state, step, &payload, attempt);
            // A handler still running at the deadline is abandoned: the
            // watcher fails the step then, and nothing of this try is written.
            let answer = match deadline_ms {
                None => handler(context).await,
                Some(deadline_ms) => {
                    let left_ms = (deadline_ms - clock.now_ms()).max(0) as u64;
                    match tokio::time::timeout(Duration::from_millis(left_ms), handler(context))
                        .await
                    {
                        Ok(answer) => answer,
                        Err(_elapsed) => {
                            state.owned.get_mut(&step).expect("owned").action = Action::Expired;
                            return Vec::new();
                        }
                    }
                }
            };
            match answer {
                Ok(outcome) => {
                    let now_ms = clock.now_ms();
                    if let Some(data) = outcome.data {
                        state.data = data;
                    }
                    let own = state.owned.get_mut(&step).expect("owned");
                    let kind = match outcome.result {
                        Ok(_) => {
                            own.action = Action::Succeeded;
                            EventKind::Succeeded
                        }
                        Err(_) => {
                            own.action = Action::Failed;
                            EventKind::Failed
                        }
                    };
                    let mut event = self.event(state, step, kind, &cause, now_ms);
                    match outcome.result {
                        Ok(payload) => {
                            event.payload = payload;
                            event.next_deadline_ms = self
                                .definition
                                .steps
                                .get(step as usize + 1)
                                .and_then(|next| next.timeout)
                                .map(|timeout| now_ms + timeout.as_millis() as i64);
                        }
                        Err(reason) => event.reason = Some(reason),
                    }
                    return vec![Output::Event(event)];
                }
                Err(error) => {
                    last_error = format!("{error:#}");
                    tracing::debug!(saga = %state.saga_id, step, attempt, error = %last_error, "saga action failed; retrying");
                    if attempt < retry.attempts_max {
                        tokio::time::sleep(retry.backoff_after(attempt)).await;
                    }
                }
            }
        }
        tracing::warn!(saga = %state.saga_id, step, attempts = attempt, error = %last_error, "saga action gave up; the event goes to the dead-letter topic");
        state.owned.get_mut(&step).expect("owned").action = Action::GaveUp;
        let now_ms = clock.now_ms();
        let mut stuck = self.event(state, step, EventKind::Stuck, &cause, now_ms);
        let reason = format!("action failed {attempt} times: {last_error}");
        stuck.reason = Some(reason.clone());
        let mut trigger = self.event(state, step - 1, EventKind::Succeeded, "", now_ms);
        trigger.event_id = cause;
        trigger.payload = payload;
        vec![
            Output::DeadLetter {
                event: trigger,
                reason,
                attempts: attempt,
            },
            Output::Event(stuck),
        ]
    }

    async fn compensate(
        &self,
        state: &mut SagaState,
        step: u32,
        clock: &dyn Clock,
        retry: &RetryPolicy,
    ) -> Vec<Output> {
        let own = &state.owned[&step];
        let (cause, payload) = own.succeeded.clone().unwrap_or_default();
        let mut attempt = match own.compensation {
            Compensation::Retrying { attempts, .. } => attempts,
            _ => 0,
        };
        let handler = self.steps[&step].compensation.clone();
        let first_round = attempt < retry.attempts_max;
        let last_error = loop {
            attempt += 1;
            let answer = match &handler {
                None => Ok(Compensated::new(Value::Null)),
                Some(handler) => handler(self.context(state, step, &payload, attempt)).await,
            };
            let error = match answer {
                Ok(compensated) => {
                    if let Some(data) = compensated.data {
                        state.data = data;
                    }
                    state.owned.get_mut(&step).expect("owned").compensation = Compensation::Done;
                    let mut event =
                        self.event(state, step, EventKind::Compensated, &cause, clock.now_ms());
                    event.payload = compensated.payload;
                    return vec![Output::Event(event)];
                }
                Err(error) => format!("{error:#}"),
            };
            tracing::debug!(saga = %state.saga_id, step, attempt, %error, "saga compensation failed; retrying");
            // Retried in place for the first round of attempts; after that
            // the saga is reported stuck once, and each further try waits
            // its backoff on a timer so that other sagas go on meanwhile.
            if !(first_round && attempt < retry.attempts_max) {
                break error;
            }
            tokio::time::sleep(retry.backoff_after(attempt)).await;
        };
        let now_ms = clock.now_ms();
        state.owned.get_mut(&step).expect("owned").compensation = Compensation::Retrying {
            attempts: attempt,
            retry_at_ms: now_ms + retry.backoff_after(attempt).as_millis() as i64,
        };
        if !first_round {
            return Vec::new();
        }
        tracing::warn!(saga = %state.saga_id, step, attempts = attempt, error = %last_error, "saga compensation keeps failing; the saga is stuck until it succeeds");
        let reason = format!("compensation failed {attempt} times (still retrying): {last_error}");
        let mut stuck = self.event(state, step, EventKind::Stuck, &cause, now_ms);
        stuck.reason = Some(reason.clone());
        let mut original = self.event(state, step, EventKind::Succeeded, "", now_ms);
        original.event_id = cause;
        original.payload = payload;
        vec![
            Output::DeadLetter {
                event: original,
                reason,
                attempts: attempt,
            },
            Output::Event(stuck),
        ]
    }
}

/// A fresh, unique event id.
pub(crate) fn new_event_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
