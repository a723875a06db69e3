//! The healer: acts on endpoints that proxies keep ejecting. Proxies report ejections;
//! once `minReporters` distinct proxies have reported an endpoint without a break for
//! `cooldown`, the leader acts within `maxActionsPerHour`: an Event only (`None`), a
//! quarantine label that keeps the pod out of every config (`RemoveFromService`), or an
//! eviction (`RestartPod`). In directory mode a configured command acts instead.
//!
//! Pure parts: [`reports`] (folding reports), [`plan`] (what to do now), [`ledger`]
//! (what was done). I/O: [`actuator`] and [`kube`] (carrying actions out), [`run`] (the loop).

pub mod actuator;
pub mod kube;
pub mod ledger;
pub mod plan;
pub mod quarantine;
pub mod reports;
pub mod run;

#[cfg(test)]
mod tests;

pub use actuator::{Act, ActError, Actuator, CommandActuator, Request};
pub use kube::KubeActuator;
pub use run::{Healer, HealingState, HealingView, REPORT_QUEUE, ReportBatch};
