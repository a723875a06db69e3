//! Why the proxy refuses a config: a field it cannot use, and the fix.

/// A field of a config the proxy cannot use. The whole config is refused, and the one in
/// force stays.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct InvalidField {
    /// The field's path in the config, e.g. `routes[0].rules[1].timeoutMs`.
    pub field: String,
    /// What is wrong with it, and how to fix it.
    pub problem: String,
}

impl InvalidField {
    /// `field` cannot be used because of `problem`.
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }
}
