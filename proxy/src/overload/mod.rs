//! Adaptive overload protection on the inbound side: a PID controller samples a signal
//! (CPU, p99 latency or requests in flight) every period and sets the rate of requests
//! admitted to the app; the excess is answered 503 with `x-braid-overloaded: 1`.

mod admission;
pub mod metrics;
mod pid;
mod protector;
mod signal;

pub use admission::{Admission, Admitted};
pub use pid::{Gains, Pid};
pub use protector::Protector;
pub use signal::{CpuSource, LatencyWindow};
