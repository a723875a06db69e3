//! Names of namespaced objects.

use std::fmt;

use braid_api::control::PodRef;

/// A namespaced object's namespace and name; orders by namespace, then name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// The namespace.
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl ObjectKey {
    /// A key from its parts.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl From<PodRef> for ObjectKey {
    fn from(p: PodRef) -> Self {
        Self::new(p.namespace, p.name)
    }
}

impl From<&ObjectKey> for PodRef {
    fn from(k: &ObjectKey) -> Self {
        PodRef {
            namespace: k.namespace.clone(),
            name: k.name.clone(),
        }
    }
}
