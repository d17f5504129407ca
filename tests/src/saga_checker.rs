//! Checks a saga event log: what the saga bus promises, read off the
//! events themselves (read_committed, in log order per saga).
//!
//! Per saga:
//! - it begins with step 0's success;
//! - each step's action took effect at most once (no payment charged
//!   twice) and was undone at most once (no stock released twice), and
//!   only undone if it took effect;
//! - a step ran only after its predecessor succeeded and before anything
//!   failed or was undone, except a step whose deadline failed it first
//!   (a *late* step), which must then be undone;
//! - compensations ran in reverse: step j only once step j + 1 failed or
//!   was undone;
//! - a completed saga undid nothing; and at the end every saga is
//!   completed or fully compensated (else it is reported unfinished).

use std::collections::{BTreeMap, HashSet};

use strata_client::saga::{Envelope, EventKind, SagaProgress, SagaStatus};

/// What the checker found.
#[derive(Debug, Default)]
pub struct SagaReport {
    pub sagas: usize,
    pub completed: usize,
    pub compensated: usize,
    /// Sagas neither completed nor compensated, with their state.
    pub unfinished: Vec<(String, SagaStatus)>,
    /// Steps that succeeded after their deadline had failed them (each
    /// undone by its own service).
    pub late_steps: usize,
    /// Steps failed by their deadline, by step index.
    pub deadlines: BTreeMap<u32, usize>,
    pub violations: Vec<String>,
}

impl SagaReport {
    /// Panics with the first violations, if there are any.
    pub fn assert_safe(&self) {
        assert!(
            self.violations.is_empty(),
            "{} violations, the first: {:#?}",
            self.violations.len(),
            &self.violations[..self.violations.len().min(10)]
        );
    }
}

/// Whether a failure was written by a deadline rather than by the step.
fn is_deadline(event: &Envelope) -> bool {
    event.kind == EventKind::Failed
        && event
            .reason
            .as_deref()
            .is_some_and(|reason| reason.starts_with("deadline passed"))
}

/// Checks `events`: every saga event, in log order within each saga (the
/// order of one partition).
pub fn check(events: &[Envelope]) -> SagaReport {
    let mut by_saga: BTreeMap<(&str, &str), Vec<&Envelope>> = BTreeMap::new();
    let mut report = SagaReport::default();
    let mut event_ids = HashSet::new();
    for event in events {
        if !event_ids.insert(event.event_id.as_str()) {
            report.violations.push(format!(
                "{}: event {} ({}) appears twice",
                event.saga_id, event.event_id, event.event_type
            ));
        }
        by_saga
            .entry((&event.saga_type, &event.saga_id))
            .or_default()
            .push(event);
    }
    for ((_, saga_id), events) in by_saga {
        report.sagas += 1;
        check_saga(saga_id, &events, &mut report);
    }
    report
}

fn check_saga(saga_id: &str, events: &[&Envelope], report: &mut SagaReport) {
    let mut violation = |text: String| report.violations.push(format!("{saga_id}: {text}"));
    let (first, rest) = events.split_first().expect("a saga has events");
    if first.step_index != 0 || first.kind != EventKind::Succeeded {
        violation(format!(
            "begins with {} instead of step 0's success",
            first.event_type
        ));
        return;
    }
    let step_count = first.step_count as usize;
    let mut progress = SagaProgress::new(first);
    let mut succeeded = vec![0u32; step_count];
    let mut compensated = vec![0u32; step_count];
    succeeded[0] = 1;
    let mut late_steps = 0;
    for event in rest {
        let index = event.step_index as usize;
        if index >= step_count || event.step_count as usize != step_count {
            violation(format!(
                "{} names step {index} of {}",
                event.event_type, event.step_count
            ));
            continue;
        }
        let before = progress.clone();
        let undoing = before.failed_step().is_some()
            || before
                .steps
                .iter()
                .any(|step| step.compensated_ms.is_some());
        match event.kind {
            EventKind::Succeeded => {
                succeeded[index] += 1;
                if succeeded[index] > 1 {
                    violation(format!(
                        "step {index} took effect twice ({})",
                        event.event_type
                    ));
                }
                let own_deadline_failed = before.steps[index]
                    .outcome
                    .as_ref()
                    .is_some_and(|outcome| !outcome.succeeded);
                if own_deadline_failed {
                    late_steps += 1;
                } else if index == 0 || !before.may_start(index as u32) || undoing {
                    violation(format!(
                        "step {index} ran ({}) though its predecessor had not succeeded or the saga was being undone",
                        event.event_type
                    ));
                }
            }
            EventKind::Failed if !is_deadline(event) => {
                if before.steps[index].outcome.is_none()
                    && (index == 0 || !before.may_start(index as u32))
                {
                    violation(format!(
                        "step {index} failed ({}) though it could not have run",
                        event.event_type
                    ));
                }
            }
            EventKind::Failed => {
                if before.steps[index].outcome.is_none() {
                    *report.deadlines.entry(event.step_index).or_default() += 1;
                }
            }
            EventKind::Compensated => {
                compensated[index] += 1;
                if compensated[index] > 1 {
                    violation(format!(
                        "step {index} was undone twice ({})",
                        event.event_type
                    ));
                }
                if succeeded[index] == 0 {
                    violation(format!(
                        "step {index} was undone ({}) though it never took effect",
                        event.event_type
                    ));
                }
                let own_late = before.steps[index].late_success;
                let reached = before.steps.get(index + 1).is_some_and(|next| {
                    next.compensated_ms.is_some()
                        || next
                            .outcome
                            .as_ref()
                            .is_some_and(|outcome| !outcome.succeeded)
                });
                if !own_late && !reached {
                    violation(format!(
                        "step {index} was undone ({}) before step {} failed or was undone",
                        event.event_type,
                        index + 1
                    ));
                }
            }
            EventKind::Stuck => {}
        }
        progress.apply(event);
    }
    report.late_steps += late_steps;
    let status = progress.status();
    match status {
        SagaStatus::Completed => {
            report.completed += 1;
            if compensated.iter().any(|&count| count > 0) {
                violation("completed, yet a step was undone".to_string());
            }
        }
        SagaStatus::Compensated => report.compensated += 1,
        other => report.unfinished.push((saga_id.to_string(), other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use EventKind::{Compensated, Failed, Succeeded};

    fn event(saga: &str, step: u32, kind: EventKind, n: usize) -> Envelope {
        Envelope {
            saga_id: saga.into(),
            saga_type: "order".into(),
            event_type: format!("{kind}-{step}"),
            event_id: format!("{saga}-{n}"),
            step_index: step,
            step_count: 3,
            kind,
            causation_id: String::new(),
            correlation_id: saga.into(),
            timestamp_ms: n as i64,
            next_deadline_ms: None,
            service: "s".into(),
            reason: None,
            payload: serde_json::Value::Null,
        }
    }

    fn history(steps: &[(u32, EventKind)]) -> Vec<Envelope> {
        steps
            .iter()
            .enumerate()
            .map(|(n, &(step, kind))| event("o1", step, kind, n))
            .collect()
    }

    fn deadline(mut event: Envelope) -> Envelope {
        event.reason = Some("deadline passed: no outcome by 3000 ms".into());
        event
    }

    fn violations(events: &[Envelope]) -> Vec<String> {
        check(events).violations
    }

    #[test]
    fn good_histories_pass() {
        let completed = history(&[(0, Succeeded), (1, Succeeded), (2, Succeeded)]);
        let report = check(&completed);
        assert_eq!((report.completed, report.violations.len()), (1, 0));
        let compensated = history(&[
            (0, Succeeded),
            (1, Succeeded),
            (2, Failed),
            (1, Compensated),
            (0, Compensated),
        ]);
        let report = check(&compensated);
        assert_eq!(
            (report.compensated, report.violations.len()),
            (1, 0),
            "{:?}",
            report.violations
        );
        let mut late = history(&[
            (0, Succeeded),
            (1, Failed),
            (1, Succeeded),
            (0, Compensated),
            (1, Compensated),
        ]);
        late[1] = deadline(late[1].clone());
        let report = check(&late);
        assert_eq!((report.compensated, report.late_steps), (1, 1));
        assert_eq!(report.deadlines, BTreeMap::from([(1, 1)]));
        assert!(report.violations.is_empty(), "{:?}", report.violations);
    }

    #[test]
    fn a_step_taking_effect_twice_is_caught() {
        let twice = history(&[
            (0, Succeeded),
            (1, Succeeded),
            (1, Succeeded),
            (2, Succeeded),
        ]);
        assert!(violations(&twice)[0].contains("step 1 took effect twice"));
    }

    #[test]
    fn a_step_undone_twice_or_without_effect_is_caught() {
        let twice = history(&[
            (0, Succeeded),
            (1, Failed),
            (0, Compensated),
            (0, Compensated),
        ]);
        assert!(violations(&twice)
            .iter()
            .any(|v| v.contains("step 0 was undone twice")));
        let never = history(&[
            (0, Succeeded),
            (1, Succeeded),
            (2, Failed),
            (1, Compensated),
            (0, Compensated),
            (2, Compensated),
        ]);
        assert!(violations(&never)
            .iter()
            .any(|v| v.contains("never took effect")));
    }

    #[test]
    fn a_step_after_the_saga_was_undone_is_caught() {
        let after = history(&[
            (0, Succeeded),
            (1, Failed),
            (0, Compensated),
            (2, Succeeded),
        ]);
        assert!(violations(&after)[0].contains("step 2 ran"));
        let skipped = history(&[(0, Succeeded), (2, Succeeded)]);
        assert!(violations(&skipped)[0].contains("step 2 ran"));
        let failed_unrun = history(&[(0, Succeeded), (2, Failed)]);
        assert!(violations(&failed_unrun)[0].contains("could not have run"));
    }

    #[test]
    fn compensations_out_of_order_are_caught() {
        let early = history(&[
            (0, Succeeded),
            (1, Succeeded),
            (2, Failed),
            (0, Compensated),
            (1, Compensated),
        ]);
        assert!(violations(&early)[0].contains("step 0 was undone"));
        let completed_then_undone = history(&[
            (0, Succeeded),
            (1, Succeeded),
            (2, Succeeded),
            (1, Compensated),
        ]);
        assert!(!violations(&completed_then_undone).is_empty());
    }

    #[test]
    fn unfinished_sagas_and_bad_starts_are_reported() {
        let running = history(&[(0, Succeeded), (1, Succeeded)]);
        assert_eq!(
            check(&running).unfinished,
            vec![("o1".to_string(), SagaStatus::Running)]
        );
        let half_undone = history(&[
            (0, Succeeded),
            (1, Succeeded),
            (2, Failed),
            (1, Compensated),
        ]);
        assert_eq!(
            check(&half_undone).unfinished[0].1,
            SagaStatus::Compensating
        );
        let headless = history(&[(1, Succeeded)]);
        assert!(violations(&headless)[0].contains("begins with"));
        let mut repeated = history(&[(0, Succeeded), (1, Succeeded)]);
        repeated[1].event_id = repeated[0].event_id.clone();
        assert!(violations(&repeated)[0].contains("appears twice"));
    }
}
