//! braid's sidecar injector: decides whether a pod joins the mesh and adds `braid-init`
//! (the capture rules) and `braid-proxy` (the sidecar) to it, as a JSON patch for the
//! admission webhook or in place for offline injection.

pub mod annotations;
pub mod args;
pub mod decide;
pub mod inject;
pub mod metrics;
pub mod native_sidecars;
pub mod offline;
pub mod settings;
pub mod webhook;
