//! What the data path reports to the operator: the endpoints it ejected and the traffic it
//! counted (mTLS and plaintext, by caller; requests and failures, by target). The request
//! path writes here; the operator client reads and sends it. Low in the module graph, so
//! both depend on it and it on neither.

mod ejections;
mod traffic;

pub use ejections::EjectionLog;
pub use traffic::{SourceCounter, TargetTraffic, TrafficLog};
