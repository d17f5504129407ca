//! One participant's state of one saga and the decisions it takes from
//! it: no I/O and no clock (`now_ms` comes in), so the runtime and the
//! in-memory test fixture run the same rules.
//!
//! A participant keeps every saga it has seen start until the saga is
//! final and nothing is left for it to do; events of sagas it does not
//! know (finished ones) are ignored. Starting only from the saga's first
//! event is what keeps a stray late event from looking like a trigger.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::envelope::{Envelope, EventKind};
use super::progress::{Change, SagaProgress};

/// What happened to a step's action here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Action {
    #[default]
    NotStarted,
    Succeeded,
    Failed,
    /// Its deadline passed before it could run, or while it ran.
    Expired,
    /// Given up after its retries (dead-lettered).
    GaveUp,
}

/// What happened to a step's compensation here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Compensation {
    #[default]
    NotStarted,
    /// Failed `attempts` times so far; tried again at `retry_at_ms`.
    Retrying {
        attempts: u32,
        retry_at_ms: i64,
    },
    Done,
}

/// A step this participant owns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OwnedStep {
    /// The predecessor's success that triggered the step: its id, its
    /// payload (the action's input) and the step's deadline.
    pub trigger: Option<(String, Value, Option<i64>)>,
    pub action: Action,
    /// The step's own success payload (the compensation's input) and id.
    pub succeeded: Option<(String, Value)>,
    pub compensation: Compensation,
    /// The deadline of the next step, which this participant enforces.
    pub next_deadline_ms: Option<i64>,
}

/// Something to do for a saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Work {
    /// Run the action of owned step `step`.
    Act { step: u32 },
    /// Run the compensation of owned step `step`.
    Compensate { step: u32 },
    /// Fail step `step`, whose deadline (held by the owner of the step
    /// before it) has passed.
    FireDeadline { step: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SagaState {
    pub saga_id: String,
    pub correlation_id: String,
    pub progress: SagaProgress,
    pub owned: BTreeMap<u32, OwnedStep>,
    /// The service's own data for this saga, as its handlers return it.
    pub data: Value,
}

impl SagaState {
    /// The state of a saga whose first event is `start`, for a participant
    /// owning `owned` steps; `None` when `start` is not a saga's first event.
    pub fn begin(start: &Envelope, owned: &[u32]) -> Option<SagaState> {
        if start.step_index != 0 || start.kind != EventKind::Succeeded {
            return None;
        }
        Some(SagaState {
            saga_id: start.saga_id.clone(),
            correlation_id: start.correlation_id.clone(),
            progress: SagaProgress::new(start),
            owned: owned
                .iter()
                .filter(|&&step| step < start.step_count)
                .map(|&step| (step, OwnedStep::default()))
                .collect(),
            data: Value::Null,
        })
    }

    /// Folds `event` in and says what to do about it. `first` is true when
    /// `event` is the one [`SagaState::begin`] was made from.
    pub fn observe(&mut self, event: &Envelope, first: bool, now_ms: i64) -> Vec<Work> {
        let change = if first {
            Change::Decisive
        } else {
            self.progress.apply(event)
        };
        if change == Change::Ignored {
            return Vec::new();
        }
        let index = event.step_index;
        let mut work = Vec::new();
        if event.kind == EventKind::Succeeded {
            if let Some(own) = self.owned.get_mut(&index) {
                // Our own success read back (or, for step 0, the start).
                own.succeeded = Some((event.event_id.clone(), event.payload.clone()));
                if own.action == Action::NotStarted {
                    own.action = Action::Succeeded;
                }
                if change == Change::Decisive {
                    own.next_deadline_ms = event.next_deadline_ms;
                }
            }
            if change == Change::Decisive {
                if let Some(own) = self.owned.get_mut(&(index + 1)) {
                    own.trigger = Some((
                        event.event_id.clone(),
                        event.payload.clone(),
                        event.next_deadline_ms,
                    ));
                    if own.action == Action::NotStarted && self.progress.may_start(index + 1) {
                        if event
                            .next_deadline_ms
                            .is_some_and(|deadline| now_ms >= deadline)
                        {
                            own.action = Action::Expired;
                        } else {
                            work.push(Work::Act { step: index + 1 });
                        }
                    }
                }
            }
        }
        if matches!(event.kind, EventKind::Succeeded | EventKind::Failed) && index > 0 {
            // The step the predecessor's owner watched has an outcome.
            if let Some(own) = self.owned.get_mut(&(index - 1)) {
                own.next_deadline_ms = None;
            }
        }
        for (&step, own) in &self.owned {
            if own.compensation == Compensation::NotStarted && self.progress.compensation_due(step)
            {
                work.push(Work::Compensate { step });
            }
        }
        work
    }

    /// What is due by `now_ms`: deadlines (plus `grace_ms`) of the next
    /// steps that still have no outcome, and compensations to retry.
    pub fn due(&self, now_ms: i64, grace_ms: i64) -> Vec<Work> {
        let mut work = Vec::new();
        for (&step, own) in &self.owned {
            if let Some(deadline_ms) = own.next_deadline_ms {
                let next = &self.progress.steps[step as usize + 1];
                if next.outcome.is_none() && now_ms >= deadline_ms.saturating_add(grace_ms) {
                    work.push(Work::FireDeadline { step: step + 1 });
                }
            }
            if let Compensation::Retrying { retry_at_ms, .. } = own.compensation {
                if now_ms >= retry_at_ms {
                    work.push(Work::Compensate { step });
                }
            }
        }
        work
    }

    /// Final, and nothing is left for this participant to do.
    pub fn finished(&self) -> bool {
        self.progress.status().is_final()
            && self
                .owned
                .values()
                .all(|own| !matches!(own.compensation, Compensation::Retrying { .. }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::saga::progress::tests::event;
    use EventKind::{Compensated, Failed, Succeeded};

    fn start(deadline_ms: Option<i64>) -> Envelope {
        let mut start = event(0, Succeeded, 0);
        start.next_deadline_ms = deadline_ms;
        start
    }

    #[test]
    fn a_trigger_starts_the_step_before_its_deadline_only() {
        let mut state = SagaState::begin(&start(Some(100)), &[1]).unwrap();
        assert_eq!(
            state.observe(&start(Some(100)), true, 10),
            vec![Work::Act { step: 1 }]
        );
        let mut late = SagaState::begin(&start(Some(100)), &[1]).unwrap();
        assert_eq!(late.observe(&start(Some(100)), true, 100), vec![]);
        assert_eq!(late.owned[&1].action, Action::Expired);
        assert!(SagaState::begin(&event(1, Succeeded, 0), &[1]).is_none());
    }

    #[test]
    fn the_owner_of_the_step_before_enforces_the_deadline() {
        let mut state = SagaState::begin(&start(Some(100)), &[0]).unwrap();
        state.observe(&start(Some(100)), true, 0);
        assert_eq!(state.due(120, 50), vec![]);
        assert_eq!(state.due(150, 50), vec![Work::FireDeadline { step: 1 }]);
        state.observe(&event(1, Succeeded, 140), false, 140);
        assert_eq!(
            state.due(1_000, 50),
            vec![],
            "an outcome cancels the deadline"
        );
    }

    #[test]
    fn compensations_are_asked_for_once_in_reverse() {
        let mut zero = SagaState::begin(&start(None), &[0]).unwrap();
        let mut one = SagaState::begin(&start(None), &[1]).unwrap();
        zero.observe(&start(None), true, 0);
        one.observe(&start(None), true, 0);
        for state in [&mut zero, &mut one] {
            state.observe(&event(1, Succeeded, 1), false, 1);
        }
        assert_eq!(zero.observe(&event(2, Failed, 2), false, 2), vec![]);
        assert_eq!(
            one.observe(&event(2, Failed, 2), false, 2),
            vec![Work::Compensate { step: 1 }]
        );
        one.owned.get_mut(&1).unwrap().compensation = Compensation::Done;
        assert_eq!(
            zero.observe(&event(1, Compensated, 3), false, 3),
            vec![Work::Compensate { step: 0 }]
        );
        zero.owned.get_mut(&0).unwrap().compensation = Compensation::Done;
        zero.observe(&event(0, Compensated, 4), false, 4);
        assert!(zero.finished());
        assert_eq!(zero.observe(&event(1, Compensated, 5), false, 5), vec![]);
    }

    #[test]
    fn a_late_success_is_undone_by_its_own_participant() {
        let mut one = SagaState::begin(&start(None), &[1]).unwrap();
        one.observe(&start(None), true, 0);
        one.owned.get_mut(&1).unwrap().action = Action::Succeeded;
        assert_eq!(one.observe(&event(1, Failed, 5), false, 5), vec![]);
        assert_eq!(
            one.observe(&event(1, Succeeded, 6), false, 6),
            vec![Work::Compensate { step: 1 }]
        );
    }
}
