//! What clients asked a cluster to do and what they were told, and a
//! checker that reads a history for what a log broker must never do.
//!
//! Black-box tests record [`Event`]s from every client as they happen
//! (times are wall-clock milliseconds of the test machine, whose clock no
//! fault touches), end with a [`Event::FinalRead`] of every partition once
//! the faults have healed, and hand the history to [`check`]. A send that
//! failed or timed out is indeterminate: its record may or may not be in
//! the log, and the checker accepts either. What it reports:
//!
//! - **lost**: an acknowledged record (in a committed transaction, if it
//!   was transactional) missing from the final log;
//! - **duplicate**: a record of an idempotent producer at two offsets
//!   (counted, not reported, for producers without idempotence);
//! - **inconsistent offset**: one offset seen holding two values, or a
//!   record acknowledged at one offset and found only at others;
//! - **out of order**: an idempotent producer's records of one partition
//!   stored in another order than it sent them;
//! - **phantom**: a record read that nobody sent, or read before it was
//!   sent;
//! - **aborted read** / **uncommitted read**: a read_committed consumer (or
//!   the final read) seeing a record of an aborted transaction, or of one
//!   whose commit had not been asked for yet;
//! - **offset regression**: a group's committed offset for a partition
//!   going backwards: a commit acknowledged after another had completed,
//!   with a smaller offset;
//! - **stalled**: a partition that had writers but acknowledged nothing
//!   for too long after the faults healed.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// One thing a client did or saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A record sent, and what its producer was told. `sequence` orders
    /// one producer's sends as it invoked them; values are unique in a
    /// history.
    Send {
        producer: String,
        idempotent: bool,
        /// The producer's transaction, if it is transactional.
        transaction: Option<u64>,
        sequence: u64,
        partition: i32,
        value: String,
        invoked_ms: i64,
        completed_ms: i64,
        outcome: Outcome,
    },
    /// A transaction's end as its producer saw it. `invoked_ms` is when the
    /// producer asked to commit or abort.
    Transaction {
        producer: String,
        transaction: u64,
        invoked_ms: i64,
        outcome: TransactionOutcome,
    },
    /// What one poll of a consumer returned from one partition, as
    /// (offset, value).
    Read {
        consumer: String,
        read_committed: bool,
        partition: i32,
        at_ms: i64,
        records: Vec<(i64, String)>,
    },
    /// A group offset commit the coordinator acknowledged.
    Commit {
        group: String,
        partition: i32,
        offset: i64,
        invoked_ms: i64,
        completed_ms: i64,
    },
    /// The faults are over: every partition should make progress again.
    Healed { at_ms: i64 },
    /// A partition's whole log as a read_committed consumer reads it from
    /// the start once everything healed: the truth the rest is held to.
    FinalRead {
        partition: i32,
        records: Vec<(i64, String)>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Acked {
        offset: i64,
    },
    /// Failed or timed out: indeterminate.
    Failed {
        error: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransactionOutcome {
    Committed,
    Aborted,
    /// The commit or abort failed: either may have happened.
    Unknown,
}

/// A history shared by the threads and tasks of one test.
#[derive(Debug, Clone, Default)]
pub struct Recorder(Arc<Mutex<Vec<Event>>>);

impl Recorder {
    pub fn record(&self, event: Event) {
        self.0.lock().unwrap().push(event);
    }

    pub fn events(&self) -> Vec<Event> {
        self.0.lock().unwrap().clone()
    }

    /// Writes the history as JSON lines, one event each.
    pub fn write_to(&self, path: &std::path::Path) -> std::io::Result<()> {
        let mut text = String::new();
        for event in self.0.lock().unwrap().iter() {
            text.push_str(&serde_json::to_string(event).expect("events serialize"));
            text.push('\n');
        }
        std::fs::write(path, text)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    Lost,
    Duplicate,
    InconsistentOffset,
    OutOfOrder,
    Phantom,
    AbortedRead,
    UncommittedRead,
    OffsetRegression,
    Stalled,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub rule: Rule,
    pub detail: String,
}

/// What the checker found, with counts that say how much it looked at.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub sends: usize,
    pub acknowledged: usize,
    pub failed: usize,
    /// Failed sends whose record is in the log anyway.
    pub failed_but_written: usize,
    pub records_read: usize,
    pub commits: usize,
    pub transactions_committed: usize,
    pub transactions_aborted: usize,
    /// Records of producers without idempotence found at two offsets:
    /// allowed, since such a producer's retry writes again.
    pub duplicates_allowed: usize,
    /// Per partition, the longest wait after healing for its first
    /// acknowledgement (ms).
    pub recovery_ms: BTreeMap<i32, i64>,
    pub violations: Vec<Violation>,
}

impl Report {
    pub fn count(&self, rule: Rule) -> usize {
        self.violations.iter().filter(|v| v.rule == rule).count()
    }

    /// Panics with a summary and the first violations, if there are any.
    pub fn assert_valid(&self) {
        if self.violations.is_empty() {
            return;
        }
        let mut counts: BTreeMap<Rule, usize> = BTreeMap::new();
        for violation in &self.violations {
            *counts.entry(violation.rule).or_default() += 1;
        }
        panic!(
            "{} violations {counts:?}, the first: {:#?}",
            self.violations.len(),
            &self.violations[..self.violations.len().min(12)]
        );
    }
}

/// How patient the liveness rule is.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// A partition with writers must acknowledge a send this soon after
    /// the faults healed.
    pub stall_ms: i64,
}

/// What the history says about one sent value.
struct Sent<'a> {
    producer: &'a str,
    idempotent: bool,
    transaction: Option<u64>,
    sequence: u64,
    partition: i32,
    invoked_ms: i64,
    completed_ms: i64,
    acked: Option<i64>,
}

/// One offset commit, ordered by when it completed.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct CommitSpan {
    completed_ms: i64,
    invoked_ms: i64,
    offset: i64,
}

/// Checks `history` (see the module docs).
pub fn check(history: &[Event], options: Options) -> Report {
    let mut report = Report::default();
    let mut sent: HashMap<&str, Sent> = HashMap::new();
    let mut transactions: HashMap<(&str, u64), (TransactionOutcome, i64)> = HashMap::new();
    let mut commits: BTreeMap<(&str, i32), Vec<CommitSpan>> = BTreeMap::new();
    let mut healed_ms = None;
    for event in history {
        match event {
            Event::Send {
                producer,
                idempotent,
                transaction,
                sequence,
                partition,
                value,
                invoked_ms,
                completed_ms,
                outcome,
            } => {
                report.sends += 1;
                let acked = match outcome {
                    Outcome::Acked { offset } => Some(*offset),
                    Outcome::Failed { .. } => None,
                };
                report.acknowledged += usize::from(acked.is_some());
                report.failed += usize::from(acked.is_none());
                let record = Sent {
                    producer,
                    idempotent: *idempotent,
                    transaction: *transaction,
                    sequence: *sequence,
                    partition: *partition,
                    invoked_ms: *invoked_ms,
                    completed_ms: *completed_ms,
                    acked,
                };
                sent.insert(value.as_str(), record);
            }
            Event::Transaction {
                producer,
                transaction,
                invoked_ms,
                outcome,
            } => {
                report.transactions_committed +=
                    usize::from(*outcome == TransactionOutcome::Committed);
                report.transactions_aborted += usize::from(*outcome == TransactionOutcome::Aborted);
                transactions.insert((producer, *transaction), (*outcome, *invoked_ms));
            }
            Event::Commit {
                group,
                partition,
                offset,
                invoked_ms,
                completed_ms,
            } => {
                report.commits += 1;
                commits
                    .entry((group, *partition))
                    .or_default()
                    .push(CommitSpan {
                        completed_ms: *completed_ms,
                        invoked_ms: *invoked_ms,
                        offset: *offset,
                    });
            }
            Event::Healed { at_ms } => healed_ms = Some(*at_ms),
            Event::Read { .. } | Event::FinalRead { .. } => {}
        }
    }
    // A transactional record's transaction: its outcome and when its
    // commit was asked for (never, as far as the history knows, if absent).
    let transaction_of = |sent: &Sent| {
        let id = sent.transaction?;
        Some(
            transactions
                .get(&(sent.producer, id))
                .copied()
                .unwrap_or((TransactionOutcome::Unknown, i64::MAX)),
        )
    };

    let mut violations = Vec::new();
    let mut violation = |rule, detail: String| violations.push(Violation { rule, detail });

    // Every read, the final ones last: what each offset held, and where the
    // final logs hold each value.
    let mut at_offset: HashMap<(i32, i64), &str> = HashMap::new();
    let mut in_final: HashMap<(i32, &str), Vec<i64>> = HashMap::new();
    let mut final_partitions = Vec::new();
    for event in history {
        let (reader, read_committed, partition, at_ms, records) = match event {
            Event::Read {
                consumer,
                read_committed,
                partition,
                at_ms,
                records,
            } => (
                consumer.as_str(),
                *read_committed,
                *partition,
                Some(*at_ms),
                records,
            ),
            Event::FinalRead { partition, records } => {
                final_partitions.push(*partition);
                ("the final read", true, *partition, None, records)
            }
            _ => continue,
        };
        for (offset, value) in records {
            let offset = *offset;
            report.records_read += 1;
            if at_ms.is_none() {
                in_final.entry((partition, value)).or_default().push(offset);
            }
            match at_offset.insert((partition, offset), value) {
                Some(other) if other != value => violation(
                    Rule::InconsistentOffset,
                    format!(
                        "{partition}@{offset} was read holding {other:?} and {value:?} ({reader})"
                    ),
                ),
                _ => {}
            }
            let Some(sent) = sent.get(value.as_str()) else {
                violation(
                    Rule::Phantom,
                    format!("{reader} read {value:?} at {partition}@{offset}, which nobody sent"),
                );
                continue;
            };
            if sent.partition != partition {
                violation(
                    Rule::Phantom,
                    format!(
                        "{reader} read {value:?} at {partition}@{offset}, sent to partition {}",
                        sent.partition
                    ),
                );
            }
            if at_ms.is_some_and(|at| at < sent.invoked_ms) {
                violation(
                    Rule::Phantom,
                    format!("{reader} read {value:?} at {partition}@{offset} before it was sent"),
                );
            }
            if !read_committed {
                continue;
            }
            match transaction_of(sent) {
                Some((TransactionOutcome::Aborted, _)) => violation(
                    Rule::AbortedRead,
                    format!("{reader} read {value:?} at {partition}@{offset}, of an aborted transaction"),
                ),
                Some((_, commit_asked_ms)) if at_ms.is_some_and(|at| at < commit_asked_ms) => {
                    violation(
                        Rule::UncommittedRead,
                        format!(
                            "{reader} read {value:?} at {partition}@{offset} before its transaction's commit was asked for"
                        ),
                    )
                }
                _ => {}
            }
        }
    }

    // Each sent value against the final logs.
    let mut stored: BTreeMap<(&str, i32), Vec<(u64, i64)>> = BTreeMap::new();
    for (value, sent) in &sent {
        if !final_partitions.contains(&sent.partition) {
            continue;
        }
        let offsets = in_final
            .get(&(sent.partition, *value))
            .map_or(&[][..], Vec::as_slice);
        if let Some(&first) = offsets.first() {
            stored
                .entry((sent.producer, sent.partition))
                .or_default()
                .push((sent.sequence, first));
        }
        if offsets.len() > 1 {
            if sent.idempotent {
                violation(
                    Rule::Duplicate,
                    format!(
                        "{value:?} of idempotent {} is stored at {}@{offsets:?}",
                        sent.producer, sent.partition
                    ),
                );
            } else {
                report.duplicates_allowed += 1;
            }
        }
        let Some(acked) = sent.acked else {
            report.failed_but_written += usize::from(!offsets.is_empty());
            continue;
        };
        let committed = match transaction_of(sent) {
            None | Some((TransactionOutcome::Committed, _)) => true,
            Some((TransactionOutcome::Aborted | TransactionOutcome::Unknown, _)) => false,
        };
        if !committed || offsets.contains(&acked) {
            continue;
        }
        let partition = sent.partition;
        if offsets.is_empty() {
            let holder = at_offset
                .get(&(partition, acked))
                .copied()
                .unwrap_or("nothing");
            violation(
                Rule::Lost,
                format!(
                    "{value:?} of {} was acknowledged at {partition}@{acked} ({} ms) and is not in the log; that offset holds {holder:?}",
                    sent.producer, sent.completed_ms
                ),
            );
        } else {
            violation(
                Rule::InconsistentOffset,
                format!("{value:?} was acknowledged at {partition}@{acked} but is stored at {offsets:?}"),
            );
        }
    }

    // Idempotent producers' order within a partition.
    for ((producer, partition), mut records) in stored {
        let idempotent = sent
            .values()
            .any(|sent| sent.producer == producer && sent.idempotent);
        if !idempotent {
            continue;
        }
        records.sort_unstable();
        for pair in records.windows(2) {
            let [(earlier, first), (later, second)] = pair else {
                unreachable!()
            };
            if second < first {
                violation(
                    Rule::OutOfOrder,
                    format!(
                        "{producer} sent #{earlier} before #{later} to partition {partition}, stored at {first} and {second}"
                    ),
                );
            }
        }
    }

    // A commit must not go below one acknowledged before it was made.
    for ((group, partition), mut list) in commits {
        list.sort_unstable();
        let mut highest = Vec::with_capacity(list.len());
        for &CommitSpan {
            completed_ms,
            offset,
            ..
        } in &list
        {
            let before = highest
                .last()
                .map_or(i64::MIN, |&(_, high): &(i64, i64)| high);
            highest.push((completed_ms, before.max(offset)));
        }
        for &CommitSpan {
            invoked_ms, offset, ..
        } in &list
        {
            let done_before =
                highest.partition_point(|&(completed_ms, _)| completed_ms < invoked_ms);
            if let Some(&(_, high)) = done_before.checked_sub(1).map(|index| &highest[index]) {
                if offset < high {
                    violation(
                        Rule::OffsetRegression,
                        format!("group {group} committed {offset} for partition {partition} after {high} was committed"),
                    );
                }
            }
        }
    }

    // Progress after healing: the longest wait for an acknowledgement per
    // partition written after the faults ended.
    if let Some(healed_ms) = healed_ms {
        let mut acks: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
        let mut last_invoked: BTreeMap<i32, i64> = BTreeMap::new();
        for sent in sent.values() {
            if sent.invoked_ms >= healed_ms {
                let last = last_invoked.entry(sent.partition).or_insert(i64::MIN);
                *last = (*last).max(sent.invoked_ms);
            }
            if sent.acked.is_some() && sent.completed_ms >= healed_ms {
                acks.entry(sent.partition)
                    .or_default()
                    .push(sent.completed_ms);
            }
        }
        for (partition, last_invoked) in last_invoked {
            let mut times = acks.remove(&partition).unwrap_or_default();
            times.sort_unstable();
            let mut previous = healed_ms;
            let mut longest = 0;
            for time in times.iter().copied().chain(std::iter::once(last_invoked)) {
                longest = longest.max(time - previous);
                previous = previous.max(time);
            }
            report.recovery_ms.insert(partition, longest);
            if longest > options.stall_ms {
                violation(
                    Rule::Stalled,
                    format!("partition {partition} acknowledged nothing for {longest} ms after the faults healed"),
                );
            }
        }
    }
    report.violations = violations;
    report.violations.sort_by_key(|violation| violation.rule);
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: Options = Options { stall_ms: 1_000 };

    /// Send number `sequence` of `producer`, invoked at `sequence` × 10 ms.
    fn send(
        producer: &str,
        sequence: u64,
        partition: i32,
        value: &str,
        acked: Option<i64>,
    ) -> Event {
        Event::Send {
            producer: producer.into(),
            idempotent: !producer.starts_with("plain"),
            transaction: None,
            sequence,
            partition,
            value: value.into(),
            invoked_ms: sequence as i64 * 10,
            completed_ms: sequence as i64 * 10 + 5,
            outcome: match acked {
                Some(offset) => Outcome::Acked { offset },
                None => Outcome::Failed {
                    error: "timed out".into(),
                },
            },
        }
    }

    fn in_transaction(mut event: Event, id: u64) -> Event {
        if let Event::Send { transaction, .. } = &mut event {
            *transaction = Some(id);
        }
        event
    }

    fn transaction(id: u64, invoked_ms: i64, outcome: TransactionOutcome) -> Event {
        Event::Transaction {
            producer: "tx".into(),
            transaction: id,
            invoked_ms,
            outcome,
        }
    }

    fn read(at_ms: i64, partition: i32, records: &[(i64, &str)]) -> Event {
        Event::Read {
            consumer: "c".into(),
            read_committed: true,
            partition,
            at_ms,
            records: records.iter().map(|(o, v)| (*o, v.to_string())).collect(),
        }
    }

    fn final_read(partition: i32, records: &[(i64, &str)]) -> Event {
        Event::FinalRead {
            partition,
            records: records.iter().map(|(o, v)| (*o, v.to_string())).collect(),
        }
    }

    fn commit(offset: i64, invoked_ms: i64, completed_ms: i64) -> Event {
        Event::Commit {
            group: "g".into(),
            partition: 0,
            offset,
            invoked_ms,
            completed_ms,
        }
    }

    /// The rules `history` breaks, each once.
    fn broken(history: &[Event]) -> Vec<Rule> {
        let mut rules: Vec<Rule> = check(history, OPTIONS)
            .violations
            .iter()
            .map(|v| v.rule)
            .collect();
        rules.dedup();
        rules
    }

    #[test]
    fn a_history_with_every_allowed_oddity_passes() {
        let history = vec![
            send("p", 1, 0, "a", Some(0)),
            // Failed but written, and failed and not written.
            send("p", 2, 0, "b", None),
            send("p", 3, 0, "c", None),
            send("p", 4, 0, "d", Some(2)),
            // A producer without idempotence may write a retry twice.
            send("plain", 5, 1, "x", Some(1)),
            in_transaction(send("tx", 6, 1, "t1", Some(2)), 1),
            transaction(1, 70, TransactionOutcome::Committed),
            in_transaction(send("tx", 8, 1, "t2", Some(4)), 2),
            transaction(2, 90, TransactionOutcome::Aborted),
            read(60, 0, &[(0, "a"), (1, "b")]),
            read(100, 1, &[(0, "x"), (1, "x"), (2, "t1")]),
            commit(1, 50, 60),
            commit(3, 55, 65),
            // Overlaps the commit of 3: either order is allowed.
            commit(2, 58, 70),
            Event::Healed { at_ms: 0 },
            final_read(0, &[(0, "a"), (1, "b"), (2, "d")]),
            final_read(1, &[(0, "x"), (1, "x"), (2, "t1")]),
        ];
        let report = check(&history, OPTIONS);
        report.assert_valid();
        assert_eq!(
            (report.sends, report.acknowledged, report.failed),
            (7, 5, 2)
        );
        assert_eq!(report.failed_but_written, 1);
        assert_eq!(report.duplicates_allowed, 1);
        assert_eq!(
            (report.transactions_committed, report.transactions_aborted),
            (1, 1)
        );
    }

    #[test]
    fn an_acknowledged_record_missing_from_the_log_is_lost() {
        let history = [
            send("p", 1, 0, "a", Some(0)),
            send("p", 2, 0, "b", Some(1)),
            final_read(0, &[(0, "a")]),
        ];
        assert_eq!(broken(&history), [Rule::Lost]);
        // A committed transaction's record too.
        let history = [
            in_transaction(send("tx", 1, 0, "t", Some(0)), 1),
            transaction(1, 20, TransactionOutcome::Committed),
            final_read(0, &[]),
        ];
        assert_eq!(broken(&history), [Rule::Lost]);
    }

    #[test]
    fn an_idempotent_record_stored_twice_is_a_duplicate() {
        let history = [
            send("p", 1, 0, "a", Some(0)),
            final_read(0, &[(0, "a"), (1, "a")]),
        ];
        assert_eq!(broken(&history), [Rule::Duplicate]);
    }

    #[test]
    fn one_offset_with_two_values_or_a_record_elsewhere_than_acknowledged_is_inconsistent() {
        let history = [
            send("p", 1, 0, "a", Some(0)),
            send("p", 2, 0, "b", None),
            read(50, 0, &[(0, "a")]),
            read(60, 0, &[(0, "b")]),
            final_read(0, &[(0, "a")]),
        ];
        assert_eq!(broken(&history), [Rule::InconsistentOffset]);
        let history = [send("p", 1, 0, "a", Some(3)), final_read(0, &[(0, "a")])];
        assert_eq!(broken(&history), [Rule::InconsistentOffset]);
    }

    #[test]
    fn an_idempotent_producers_records_stored_out_of_order_are_reported() {
        let history = [
            send("p", 1, 0, "a", Some(1)),
            send("p", 2, 0, "b", Some(0)),
            final_read(0, &[(0, "b"), (1, "a")]),
        ];
        assert_eq!(broken(&history), [Rule::OutOfOrder]);
        // Without idempotence, retries may reorder.
        let history = [
            send("plain", 1, 0, "a", Some(1)),
            send("plain", 2, 0, "b", Some(0)),
            final_read(0, &[(0, "b"), (1, "a")]),
        ];
        assert_eq!(broken(&history), []);
    }

    #[test]
    fn a_record_nobody_sent_or_read_before_it_was_sent_is_a_phantom() {
        let history = [
            send("p", 1, 0, "a", Some(0)),
            final_read(0, &[(0, "a"), (1, "ghost")]),
        ];
        assert_eq!(broken(&history), [Rule::Phantom]);
        let history = [
            send("p", 5, 0, "a", Some(0)),
            read(20, 0, &[(0, "a")]),
            final_read(0, &[(0, "a")]),
        ];
        assert_eq!(broken(&history), [Rule::Phantom]);
        let history = [
            send("p", 1, 1, "a", Some(0)),
            final_read(0, &[(0, "a")]),
            final_read(1, &[]),
        ];
        assert_eq!(broken(&history), [Rule::Lost, Rule::Phantom]);
    }

    #[test]
    fn reading_an_aborted_or_not_yet_committed_transaction_is_reported() {
        let history = [
            in_transaction(send("tx", 1, 0, "t", Some(0)), 1),
            transaction(1, 20, TransactionOutcome::Aborted),
            final_read(0, &[(0, "t")]),
        ];
        assert_eq!(broken(&history), [Rule::AbortedRead]);
        let history = [
            in_transaction(send("tx", 1, 0, "t", Some(0)), 1),
            read(15, 0, &[(0, "t")]),
            transaction(1, 20, TransactionOutcome::Committed),
            final_read(0, &[(0, "t")]),
        ];
        assert_eq!(broken(&history), [Rule::UncommittedRead]);
    }

    #[test]
    fn a_commit_below_one_acknowledged_before_it_is_a_regression() {
        let history = [commit(5, 0, 10), commit(3, 20, 30)];
        assert_eq!(broken(&history), [Rule::OffsetRegression]);
    }

    #[test]
    fn a_partition_silent_too_long_after_healing_has_stalled() {
        let mut history = vec![Event::Healed { at_ms: 0 }];
        // Acknowledged at 15 ms, then sends fail for 2 s.
        history.push(send("p", 1, 0, "a", Some(0)));
        history
            .extend((2..200).map(|sequence| send("p", sequence, 0, &format!("v{sequence}"), None)));
        history.push(final_read(0, &[(0, "a")]));
        assert_eq!(broken(&history), [Rule::Stalled]);
        assert_eq!(check(&history, OPTIONS).recovery_ms[&0], 1990 - 15);
    }
}
