//! Field paths in the notation `kubectl explain` and API server errors use:
//! `spec.rules[1].route[0].group`.

use std::fmt;

/// A path to a field of a resource.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct FieldPath(String);

impl FieldPath {
    /// The path of a top-level field such as `spec`.
    pub fn root(name: &str) -> Self {
        Self(name.to_owned())
    }

    /// The path of a child field.
    pub fn field(&self, name: &str) -> Self {
        Self(format!("{}.{name}", self.0))
    }

    /// The path of a list element.
    pub fn index(&self, i: usize) -> Self {
        Self(format!("{}[{i}]", self.0))
    }

    /// The path of a map entry, quoted like `matchLabels["app"]`.
    pub fn key(&self, key: &str) -> Self {
        Self(format!("{}[{key:?}]", self.0))
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FieldPath({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_kubectl_style_paths() {
        let p = FieldPath::root("spec")
            .field("rules")
            .index(1)
            .field("route");
        assert_eq!(
            p.index(0).field("group").as_str(),
            "spec.rules[1].route[0].group"
        );
        assert_eq!(
            FieldPath::root("spec")
                .field("matchLabels")
                .key("app")
                .as_str(),
            "spec.matchLabels[\"app\"]"
        );
    }
}
