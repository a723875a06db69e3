//! The mutating admission webhook.

pub mod review;
