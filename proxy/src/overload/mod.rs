//! Adaptive overload protection on the inbound side: every period a gradient limiter
//! reads the admitted requests' latencies and a signal (CPU, p99 latency or requests in
//! flight) and sets how many requests may be at the app at once; the excess is answered
//! 503 with `x-braid-overloaded: 1`.

mod admission;
mod limiter;
pub mod metrics;
#[cfg(test)]
mod plant;
mod protector;
mod signal;

pub use admission::{Admission, Admitted};
pub use limiter::{Limiter, Signal};
pub use protector::Protector;
pub use signal::{CpuSource, LatencyWindow};
