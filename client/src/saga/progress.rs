//! How far a saga has come, folded from its events alone. Participants,
//! `logctl saga` and the checkers all use this fold, so they agree on
//! what every event means.
//!
//! The rule that settles races: a step's *first* outcome in the log wins.
//! A deadline that fires after the step succeeded is ignored; a success
//! that lands after the step's deadline failed it is *late*, and its own
//! participant compensates it.

use serde::{Deserialize, Serialize};

use super::envelope::{Envelope, EventKind};

/// What an event changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// It decided its step's outcome, or recorded its compensation or a
    /// step getting stuck.
    Decisive,
    /// A success after the step had already failed.
    LateSuccess,
    /// An outcome after the first (a deadline firing late), or a repeat.
    Ignored,
}

/// A step's outcome as the log recorded it first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedOutcome {
    pub succeeded: bool,
    pub at_ms: i64,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepProgress {
    /// When the step's trigger (its predecessor's success) was written.
    pub triggered_ms: Option<i64>,
    /// The first outcome in the log.
    pub outcome: Option<RecordedOutcome>,
    /// A success landed after the step had failed.
    pub late_success: bool,
    pub compensated_ms: Option<i64>,
    /// Why a participant gave up on this step, until the step moves on.
    pub stuck: Option<String>,
}

impl StepProgress {
    fn succeeded(&self) -> bool {
        self.outcome
            .as_ref()
            .is_some_and(|outcome| outcome.succeeded)
    }

    /// Its action took effect and has not been undone.
    fn needs_compensation(&self) -> bool {
        (self.succeeded() || self.late_success) && self.compensated_ms.is_none()
    }
}

/// Where a saga stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SagaStatus {
    /// Steps still to run.
    Running,
    /// A step failed; compensations still to run.
    Compensating,
    /// Every step succeeded.
    Completed,
    /// A step failed and every step that had taken effect was undone.
    Compensated,
    /// A participant gave up on a step that has not moved on since.
    Stuck,
}

impl SagaStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SagaStatus::Running => "running",
            SagaStatus::Compensating => "compensating",
            SagaStatus::Completed => "completed",
            SagaStatus::Compensated => "compensated",
            SagaStatus::Stuck => "stuck",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, SagaStatus::Completed | SagaStatus::Compensated)
    }
}

impl std::str::FromStr for SagaStatus {
    type Err = String;

    fn from_str(text: &str) -> Result<SagaStatus, String> {
        Ok(match text {
            "running" => SagaStatus::Running,
            "compensating" => SagaStatus::Compensating,
            "completed" => SagaStatus::Completed,
            "compensated" => SagaStatus::Compensated,
            "stuck" => SagaStatus::Stuck,
            _ => {
                return Err(format!(
                    "unknown saga state {text:?} (running, compensating, completed, compensated, stuck)"
                ))
            }
        })
    }
}

impl std::fmt::Display for SagaStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One saga's steps as its events tell them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaProgress {
    pub steps: Vec<StepProgress>,
    pub started_ms: i64,
    pub last_event_ms: i64,
}

impl SagaProgress {
    /// The progress of a saga that `start` (the success of step 0) began.
    pub fn new(start: &Envelope) -> SagaProgress {
        let mut progress = SagaProgress {
            steps: vec![StepProgress::default(); start.step_count as usize],
            started_ms: start.timestamp_ms,
            last_event_ms: start.timestamp_ms,
        };
        progress.apply(start);
        progress
    }

    /// Folds one event in.
    pub fn apply(&mut self, event: &Envelope) -> Change {
        let index = event.step_index as usize;
        if index >= self.steps.len() {
            return Change::Ignored;
        }
        self.last_event_ms = self.last_event_ms.max(event.timestamp_ms);
        let step = &mut self.steps[index];
        let change = match event.kind {
            EventKind::Succeeded | EventKind::Failed => {
                let succeeded = event.kind == EventKind::Succeeded;
                match &step.outcome {
                    None => {
                        step.outcome = Some(RecordedOutcome {
                            succeeded,
                            at_ms: event.timestamp_ms,
                            reason: event.reason.clone(),
                        });
                        step.stuck = None;
                        Change::Decisive
                    }
                    Some(first) if succeeded && !first.succeeded && !step.late_success => {
                        step.late_success = true;
                        Change::LateSuccess
                    }
                    Some(_) => Change::Ignored,
                }
            }
            EventKind::Compensated => {
                if step.compensated_ms.is_some() {
                    Change::Ignored
                } else {
                    step.compensated_ms = Some(event.timestamp_ms);
                    step.stuck = None;
                    Change::Decisive
                }
            }
            EventKind::Stuck => {
                step.stuck = Some(event.reason.clone().unwrap_or_default());
                Change::Decisive
            }
        };
        if change == Change::Decisive && event.kind == EventKind::Succeeded {
            if let Some(next) = self.steps.get_mut(index + 1) {
                next.triggered_ms = Some(event.timestamp_ms);
            }
        }
        change
    }

    /// The step whose failure turned the saga back, if one did.
    pub fn failed_step(&self) -> Option<u32> {
        self.steps
            .iter()
            .position(|step| {
                step.outcome
                    .as_ref()
                    .is_some_and(|outcome| !outcome.succeeded)
            })
            .map(|index| index as u32)
    }

    pub fn status(&self) -> SagaStatus {
        let stuck = self.steps.iter().any(|step| step.stuck.is_some());
        let settled = match self.failed_step() {
            None => self.steps.last().is_some_and(StepProgress::succeeded),
            Some(_) => !self.steps.iter().any(StepProgress::needs_compensation),
        };
        match (settled, self.failed_step(), stuck) {
            (true, None, _) => SagaStatus::Completed,
            (true, Some(_), _) => SagaStatus::Compensated,
            (false, _, true) => SagaStatus::Stuck,
            (false, None, false) => SagaStatus::Running,
            (false, Some(_), false) => SagaStatus::Compensating,
        }
    }

    /// Whether the compensation of step `index` is due: the step took
    /// effect, and the saga is being undone down to it (its successor
    /// failed or was compensated) or the step itself failed first.
    pub fn compensation_due(&self, index: u32) -> bool {
        let index = index as usize;
        let step = &self.steps[index];
        if !step.needs_compensation() {
            return false;
        }
        if step.late_success {
            return true;
        }
        self.steps.get(index + 1).is_some_and(|next| {
            next.compensated_ms.is_some()
                || next
                    .outcome
                    .as_ref()
                    .is_some_and(|outcome| !outcome.succeeded)
        })
    }

    /// Whether step `index` may still start: its predecessor succeeded, it
    /// has no outcome, and no step has failed.
    pub fn may_start(&self, index: u32) -> bool {
        let index = index as usize;
        index > 0
            && self.steps[index - 1].succeeded()
            && self.steps[index].outcome.is_none()
            && self.failed_step().is_none()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::Value;

    /// An event of a 3-step saga "s1", written at `at_ms`.
    pub(crate) fn event(step: u32, kind: EventKind, at_ms: i64) -> Envelope {
        Envelope {
            saga_id: "s1".into(),
            saga_type: "t".into(),
            event_type: format!("{kind}{step}"),
            event_id: format!("{kind}{step}@{at_ms}"),
            step_index: step,
            step_count: 3,
            kind,
            causation_id: String::new(),
            correlation_id: "s1".into(),
            timestamp_ms: at_ms,
            next_deadline_ms: None,
            service: "x".into(),
            reason: None,
            payload: Value::Null,
        }
    }

    use EventKind::{Compensated, Failed, Stuck, Succeeded};

    fn fold(events: &[(u32, EventKind)]) -> SagaProgress {
        let mut progress = SagaProgress::new(&event(0, Succeeded, 0));
        for (at, (step, kind)) in events.iter().enumerate() {
            progress.apply(&event(*step, *kind, at as i64 + 1));
        }
        progress
    }

    #[test]
    fn every_step_succeeding_completes_the_saga() {
        assert_eq!(fold(&[]).status(), SagaStatus::Running);
        assert!(fold(&[]).may_start(1));
        let done = fold(&[(1, Succeeded), (2, Succeeded)]);
        assert_eq!(done.status(), SagaStatus::Completed);
        assert!(!done.may_start(2));
        assert_eq!(done.steps[2].triggered_ms, Some(1));
    }

    #[test]
    fn a_failure_compensates_the_steps_before_it_in_reverse() {
        let failed = fold(&[(1, Succeeded), (2, Failed)]);
        assert_eq!(failed.status(), SagaStatus::Compensating);
        assert!(failed.compensation_due(1));
        assert!(!failed.compensation_due(0), "step 0 waits for step 1");
        assert!(
            !failed.compensation_due(2),
            "a failed step has nothing to undo"
        );
        let halfway = fold(&[(1, Succeeded), (2, Failed), (1, Compensated)]);
        assert!(halfway.compensation_due(0));
        assert!(!halfway.compensation_due(1), "at most once");
        let done = fold(&[
            (1, Succeeded),
            (2, Failed),
            (1, Compensated),
            (0, Compensated),
        ]);
        assert_eq!(done.status(), SagaStatus::Compensated);
        assert!(!fold(&[(1, Failed)]).may_start(2));
    }

    #[test]
    fn the_first_outcome_wins_and_a_late_success_is_undone() {
        let timed_out_late = fold(&[(1, Succeeded), (1, Failed)]);
        assert_eq!(
            timed_out_late.status(),
            SagaStatus::Running,
            "late failure ignored"
        );
        let late = fold(&[(1, Failed), (1, Succeeded)]);
        assert!(late.steps[1].late_success);
        assert!(late.compensation_due(1), "its own participant undoes it");
        assert!(late.compensation_due(0));
        let undone = fold(&[(1, Failed), (0, Compensated), (1, Succeeded)]);
        assert_eq!(
            undone.status(),
            SagaStatus::Compensating,
            "until the late step is undone"
        );
        let settled = fold(&[
            (1, Failed),
            (0, Compensated),
            (1, Succeeded),
            (1, Compensated),
        ]);
        assert_eq!(settled.status(), SagaStatus::Compensated);
    }

    #[test]
    fn stuck_lasts_until_the_step_moves_on() {
        let stuck = fold(&[(1, Stuck)]);
        assert_eq!(stuck.status(), SagaStatus::Stuck);
        assert_eq!(
            fold(&[(1, Stuck), (1, Failed)]).status(),
            SagaStatus::Compensating
        );
        let compensation_stuck = fold(&[(1, Failed), (0, Stuck)]);
        assert_eq!(compensation_stuck.status(), SagaStatus::Stuck);
        let recovered = fold(&[(1, Failed), (0, Stuck), (0, Compensated)]);
        assert_eq!(recovered.status(), SagaStatus::Compensated);
    }
}
