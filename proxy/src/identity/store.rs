//! The certificate in force, swapped whole when a renewal lands.

use arc_swap::ArcSwapOption;

use super::Certified;

/// The certificate in force, if any yet.
#[derive(Debug, Default)]
pub struct IdentityStore {
    current: ArcSwapOption<Certified>,
}

impl IdentityStore {
    /// The certificate in force.
    pub fn current(&self) -> Option<std::sync::Arc<Certified>> {
        self.current.load_full()
    }

    /// Puts `certified` in force; connections made from now on present it.
    pub fn install(&self, certified: Certified) {
        self.current.store(Some(std::sync::Arc::new(certified)));
    }
}
