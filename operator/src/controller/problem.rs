//! Why an object cannot be used as it is: the one shape every controller reports a user's mistake
//! (or a missing dependency) in, as a condition and an Event.

/// A stable CamelCase reason (the condition's and the Event's) and a message a person can act on.
/// Never holds secret values.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Problem {
    pub reason: &'static str,
    pub message: String,
}

impl Problem {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }

    /// The spec cannot be used as written.
    pub fn invalid_spec(message: impl Into<String>) -> Self {
        Self::new("InvalidSpec", message)
    }
}
