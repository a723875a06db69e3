//! Why an input is refused: a config, a registry or a token file, as the proxy and the
//! operator read them. Each error names the field and the fix.

/// A field that cannot be used. The whole input is refused, and what was in force
/// stays.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct InvalidField {
    /// The field's path, e.g. `routes[0].rules[1].timeoutMs`.
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

/// Why a YAML (or JSON) input is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidInput {
    /// It does not parse (the parser's message, with line and column).
    #[error("{0}")]
    Syntax(String),
    /// A field cannot be used.
    #[error(transparent)]
    Field(#[from] InvalidField),
}
