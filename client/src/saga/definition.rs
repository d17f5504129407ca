//! A saga as data: its steps in order, each with the events that report
//! it and the deadline its predecessor holds it to. Topic names derive from
//! the saga's name so that every participant and `logctl` find them.

use std::time::Duration;

use super::envelope::EventKind;

/// One step: its action's success and failure events, the event its
/// compensation writes, and how long the step may take once triggered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub name: String,
    pub succeeded: String,
    pub failed: String,
    pub compensated: String,
    /// Measured from the event that triggers the step; `None` waits forever.
    pub timeout: Option<Duration>,
}

impl Step {
    /// A step whose events are named `<Name>Succeeded`, `<Name>Failed` and
    /// `<Name>Compensated` until renamed.
    pub fn new(name: &str) -> Step {
        let mut title = name.to_string();
        if let Some(first) = title.get_mut(0..1) {
            first.make_ascii_uppercase();
        }
        Step {
            name: name.to_string(),
            succeeded: format!("{title}Succeeded"),
            failed: format!("{title}Failed"),
            compensated: format!("{title}Compensated"),
            timeout: None,
        }
    }

    pub fn succeeded(mut self, event_type: &str) -> Step {
        self.succeeded = event_type.to_string();
        self
    }

    pub fn failed(mut self, event_type: &str) -> Step {
        self.failed = event_type.to_string();
        self
    }

    pub fn compensated(mut self, event_type: &str) -> Step {
        self.compensated = event_type.to_string();
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Step {
        self.timeout = Some(timeout);
        self
    }

    /// The event type that reports `kind` of this step.
    pub fn event_type(&self, kind: EventKind) -> &str {
        match kind {
            EventKind::Succeeded => &self.succeeded,
            EventKind::Failed => &self.failed,
            EventKind::Compensated => &self.compensated,
            EventKind::Stuck => STUCK_EVENT_TYPE,
        }
    }
}

/// The event type of a step given up on (the dead-letter topic has the
/// event that could not be handled).
pub const STUCK_EVENT_TYPE: &str = "SagaStepStuck";

/// The topic prefix every saga's topics share.
pub const TOPIC_PREFIX: &str = "saga.";
/// The suffix of a saga's event topic.
pub const EVENTS_TOPIC_SUFFIX: &str = ".events";

/// A saga type: a name and at least one step. Step 0 starts the saga (its
/// success is the first event); each later step is triggered by its
/// predecessor's success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SagaDefinition {
    pub name: String,
    pub steps: Vec<Step>,
}

impl SagaDefinition {
    pub fn new(name: &str) -> SagaDefinition {
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "a saga name is letters, digits, '-' and '_' (it names topics): {name:?}"
        );
        SagaDefinition {
            name: name.to_string(),
            steps: Vec::new(),
        }
    }

    pub fn step(mut self, step: Step) -> SagaDefinition {
        assert!(
            self.steps.iter().all(|existing| existing.name != step.name),
            "step {:?} is defined twice",
            step.name
        );
        self.steps.push(step);
        self
    }

    pub fn step_count(&self) -> u32 {
        u32::try_from(self.steps.len()).expect("fewer than 2^32 steps")
    }

    /// The index of the step called `name`.
    pub fn step_index(&self, name: &str) -> Option<u32> {
        self.steps
            .iter()
            .position(|step| step.name == name)
            .map(|index| index as u32)
    }

    pub fn events_topic(&self) -> String {
        events_topic(&self.name)
    }

    pub fn dead_letter_topic(&self) -> String {
        format!("{TOPIC_PREFIX}{}.dead-letter", self.name)
    }

    /// The compacted topic holding `service`'s state of each saga.
    pub fn state_topic(&self, service: &str) -> String {
        format!("{TOPIC_PREFIX}{}.{service}.state", self.name)
    }

    /// The consumer group (and transactional id prefix) of `service`.
    pub fn group_id(&self, service: &str) -> String {
        format!("{TOPIC_PREFIX}{}.{service}", self.name)
    }
}

/// The event topic of the saga type called `name`.
pub fn events_topic(name: &str) -> String {
    format!("{TOPIC_PREFIX}{name}{EVENTS_TOPIC_SUFFIX}")
}

/// The saga type whose event topic is `topic`, if it is one.
pub fn saga_type_of_topic(topic: &str) -> Option<&str> {
    topic
        .strip_prefix(TOPIC_PREFIX)?
        .strip_suffix(EVENTS_TOPIC_SUFFIX)
        .filter(|name| !name.is_empty() && !name.contains('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_derive_from_the_name_and_back() {
        let definition = SagaDefinition::new("order").step(Step::new("payment"));
        assert_eq!(definition.events_topic(), "saga.order.events");
        assert_eq!(saga_type_of_topic("saga.order.events"), Some("order"));
        assert_eq!(saga_type_of_topic("saga.order.payment.state"), None);
        assert_eq!(definition.steps[0].succeeded, "PaymentSucceeded");
        assert_eq!(definition.step_index("payment"), Some(0));
    }

    #[test]
    #[should_panic(expected = "defined twice")]
    fn a_step_name_is_unique() {
        let _ = SagaDefinition::new("order")
            .step(Step::new("payment"))
            .step(Step::new("payment"));
    }
}
