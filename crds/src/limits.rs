//! Bounds on every list and string, shared by the schemas (so the API server's CEL cost
//! estimator accepts the rules) and by `validate()` (so the directory source enforces
//! the same limits).

/// Labels in one selector or group.
pub const MAX_LABELS: u32 = 16;
/// A label key with its optional DNS prefix (`prefix/name`: 253 + 1 + 63).
pub const MAX_LABEL_KEY_LENGTH: u32 = 317;
/// A label value.
pub const MAX_LABEL_VALUE_LENGTH: u32 = 63;
/// A DNS-1123 subdomain (hosts, FQDNs).
pub const MAX_HOST_LENGTH: u32 = 253;
/// Names of groups and rules.
pub const MAX_NAME_LENGTH: u32 = 63;
/// Groups in one TrafficRoute.
pub const MAX_GROUPS: u32 = 16;
/// Rules in one TrafficRoute. With MAX_DESTINATIONS and MAX_GROUPS this bounds the
/// "every routed group exists" rule (rules × destinations × groups name comparisons)
/// inside the per-rule CEL cost budget.
pub const MAX_RULES: u32 = 32;
/// Alternatives in one rule's `match` (ORed).
pub const MAX_MATCHES: u32 = 8;
/// Header conditions in one match (ANDed).
pub const MAX_HEADER_MATCHES: u32 = 16;
/// An HTTP header name.
pub const MAX_HEADER_NAME_LENGTH: u32 = 128;
/// A matched value: header value, path, prefix or regex.
pub const MAX_MATCH_VALUE_LENGTH: u32 = 1024;
/// Weighted destinations in one rule. The "weights sum to 100" CEL rule is written out
/// term by term up to this many entries, since 1.28's CEL has no `sum()`.
pub const MAX_DESTINATIONS: u32 = 8;
/// Retry conditions in one rule.
pub const MAX_RETRY_ON: u32 = 8;
/// Retry attempts after the first try.
pub const MAX_RETRY_ATTEMPTS: u32 = 10;
/// Port overrides in one EncryptionPolicy.
pub const MAX_PORT_OVERRIDES: u32 = 32;
/// Steps of an automatic rollout. The "ascending" CEL rule is written out pairwise up
/// to this many entries.
pub const MAX_ROLLOUT_STEPS: u32 = 10;
/// Entries in status lists written by the operator.
pub const MAX_STATUS_ENTRIES: u32 = 256;
/// Ports in one AccessPolicy.
pub const MAX_ACCESS_PORTS: u32 = 32;
/// Rules in one AccessPolicy.
pub const MAX_ACCESS_RULES: u32 = 64;
/// Sources in one AccessPolicy rule (ORed).
pub const MAX_ACCESS_SOURCES: u32 = 16;
/// A SPIFFE identity or identity pattern.
pub const MAX_IDENTITY_LENGTH: u32 = 512;
/// A namespace name (a DNS label).
pub const MAX_NAMESPACE_LENGTH: u32 = 63;
