//! Collecting validation errors.

use std::fmt;

use super::FieldPath;

/// One problem: where it is and what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationError {
    /// The field at fault, e.g. `spec.rules[1].route[0].group`.
    pub path: FieldPath,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in one resource.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(pub Vec<ValidationError>);

impl ValidationErrors {
    /// The errors, in the order the fields appear.
    pub fn iter(&self) -> impl Iterator<Item = &ValidationError> {
        self.0.iter()
    }

    /// The paths of all errors.
    pub fn paths(&self) -> Vec<&str> {
        self.0.iter().map(|e| e.path.as_str()).collect()
    }

    /// One line for a status condition's message: all errors joined by `; `.
    pub fn summary(&self) -> String {
        self.0
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Accumulates errors while a resource is walked.
#[derive(Debug, Default)]
pub struct Report(Vec<ValidationError>);

impl Report {
    /// Records a problem at `path`.
    pub fn error(&mut self, path: &FieldPath, message: impl Into<String>) {
        self.0.push(ValidationError {
            path: path.clone(),
            message: message.into(),
        });
    }

    /// Records `message` at `path` unless `ok`.
    pub fn check(&mut self, ok: bool, path: &FieldPath, message: impl FnOnce() -> String) {
        if !ok {
            self.error(path, message());
        }
    }

    /// Ends the walk.
    pub fn finish(self) -> Result<(), ValidationErrors> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(self.0))
        }
    }
}
