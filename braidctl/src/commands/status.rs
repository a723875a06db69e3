//! `braidctl status`: every braid resource, whether it is accepted, what it does now, and
//! how many of the proxies it concerns have applied it, the slow ones named. Worked out
//! from the statuses the operator's leader writes (the same a `kubectl get` shows).

use serde::Serialize;
use serde_json::Value;

use crate::cli::{Format, Global};
use crate::mesh::{Mesh, Resource};
use crate::output::{Table, Tone, paint};

/// One resource, summed up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// `TrafficRoute`, …
    pub kind: String,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The Accepted condition: `True`, `False`, or `Unknown` before the operator wrote
    /// a status.
    pub accepted: String,
    /// Why not accepted (or why a reference does not resolve).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What it does now, in words.
    pub now: String,
    /// Proxies that hold its current version.
    pub applied: u32,
    /// Proxies it concerns.
    pub targeted: u32,
    /// Some of the proxies that have not applied it yet.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<String>,
}

/// Runs `braidctl status`.
pub async fn run(global: &Global) -> anyhow::Result<std::process::ExitCode> {
    let mesh = Mesh::from(global).await?;
    let namespace = match global.all_namespaces {
        true => None,
        false => global.namespace.as_deref(),
    };
    let summaries: Vec<Summary> = mesh
        .resources(namespace)
        .await?
        .iter()
        .map(summarize)
        .collect();
    crate::output::print(global.output, &summaries, || {
        render(&summaries, global.output == Format::Wide)
    })?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// The table of `summaries`.
pub fn render(summaries: &[Summary], wide: bool) -> String {
    if summaries.is_empty() {
        return "No braid resources found.\n".into();
    }
    let mut headers = vec!["NAMESPACE", "KIND", "NAME", "ACCEPTED", "NOW", "PROXIES"];
    if wide {
        headers.push("MESSAGE");
    }
    let mut t = Table::new(&headers);
    for s in summaries {
        let accepted = match s.accepted.as_str() {
            "True" => paint("True", Tone::Good),
            "False" => paint("False", Tone::Bad),
            other => paint(other, Tone::Warn),
        };
        let mut row = vec![
            s.namespace.clone(),
            s.kind.clone(),
            s.name.clone(),
            accepted,
            s.now.clone(),
            proxies(s),
        ];
        if wide {
            row.push(s.message.clone().unwrap_or_default());
        }
        t.row(row);
    }
    t.render()
}

/// `applied/targeted`, and who is behind.
fn proxies(s: &Summary) -> String {
    let counts = format!("{}/{}", s.applied, s.targeted);
    if s.applied >= s.targeted {
        return paint(&counts, Tone::Good);
    }
    let behind = s.targeted - s.applied;
    let named = s.pending.join(", ");
    let more = behind as usize > s.pending.len();
    let who = match (named.is_empty(), more) {
        (true, _) => String::new(),
        (false, false) => format!(" (waiting: {named})"),
        (false, true) => format!(" (waiting: {named}, …)"),
    };
    paint(&format!("{counts}{who}"), Tone::Warn)
}

/// Sums up one resource from its status.
pub fn summarize(r: &Resource) -> Summary {
    let empty = Value::Null;
    let status = r.status.as_ref().unwrap_or(&empty);
    let accepted = condition(status, "Accepted");
    let proxies = &status["proxies"];
    let mut message = accepted
        .filter(|c| c["status"] != "True")
        .and_then(|c| c["message"].as_str())
        .map(str::to_owned);
    let now = match r.status {
        None => "no status yet (is an operator replica leading?)".to_owned(),
        Some(_) => match r.kind.as_str() {
            "TrafficRoute" => {
                if let Some(c) =
                    condition(status, "ResolvedRefs").filter(|c| c["status"] == "False")
                {
                    message = message.or_else(|| c["message"].as_str().map(str::to_owned));
                }
                route_now(status)
            }
            "EncryptionPolicy" => encryption_now(status),
            "SelfHealing" => healing_now(status),
            "AccessPolicy" => access_now(status),
            _ => String::new(),
        },
    };
    Summary {
        kind: r.kind.clone(),
        namespace: r.namespace.clone(),
        name: r.name.clone(),
        accepted: accepted
            .and_then(|c| c["status"].as_str())
            .unwrap_or("Unknown")
            .to_owned(),
        message,
        now,
        applied: count(&proxies["applied"]),
        targeted: count(&proxies["targeted"]),
        pending: proxies["pending"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

fn count(v: &Value) -> u32 {
    v.as_u64()
        .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX))
}

fn condition<'a>(status: &'a Value, kind: &str) -> Option<&'a Value> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

fn route_now(status: &Value) -> String {
    match status["ruleCount"].as_u64() {
        Some(1) => "1 rule in force".into(),
        Some(n) => format!("{n} rules in force"),
        None => "no rules in force".into(),
    }
}

fn encryption_now(status: &Value) -> String {
    let phase = status["phase"].as_str().unwrap_or("Unknown");
    let mut now = match (phase, status["currentPercent"].as_u64()) {
        ("RollingOut", Some(p)) => format!("RollingOut {p}% of callers on mTLS"),
        (phase, _) => phase.to_owned(),
    };
    if let Some(safe) = condition(status, "SafeToEnforce") {
        now.push_str(match safe["status"].as_str() {
            Some("True") => ", safe to enforce",
            _ => ", not safe to enforce",
        });
    }
    let sources = status["plaintextSources"].as_array().map_or(0, Vec::len);
    if sources > 0 {
        now.push_str(&format!(", {sources} plaintext source(s)"));
    }
    now
}

fn healing_now(status: &Value) -> String {
    let unhealthy = status["unhealthy"].as_array().cloned().unwrap_or_default();
    let mut now = match unhealthy.len() {
        0 => "all endpoints healthy".to_owned(),
        n => {
            let names: Vec<String> = unhealthy
                .iter()
                .take(3)
                .map(|u| {
                    format!(
                        "{} ({} reporter(s))",
                        u["pod"].as_str().unwrap_or("?"),
                        u["reporters"].as_u64().unwrap_or(0)
                    )
                })
                .collect();
            format!("{n} ejected: {}", names.join(", "))
        }
    };
    if let Some(last) = status["actions"].as_array().and_then(|a| a.last()) {
        now.push_str(&format!(
            "; last action {} on {}",
            last["action"].as_str().unwrap_or("?"),
            last["pod"].as_str().unwrap_or("?")
        ));
    }
    now
}

fn access_now(status: &Value) -> String {
    let phase = status["phase"].as_str().unwrap_or("Unknown");
    let d = &status["decisions"];
    let mut now = phase.to_owned();
    if d.is_object() {
        now.push_str(&format!(
            ", {} allowed, {} would be denied, {} denied",
            d["allowed"].as_u64().unwrap_or(0),
            d["wouldDeny"].as_u64().unwrap_or(0),
            d["denied"].as_u64().unwrap_or(0)
        ));
    }
    if let Some(safe) = condition(status, "SafeToEnforce")
        && safe["status"] == "False"
    {
        now.push_str(", not safe to enforce");
    }
    now
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(kind: &str, status: Value) -> Resource {
        Resource {
            kind: kind.into(),
            namespace: "shop".into(),
            name: "x".into(),
            status: Some(status),
        }
    }

    #[test]
    fn a_route_behind_on_some_proxies_names_them() {
        let s = summarize(&resource(
            "TrafficRoute",
            serde_json::json!({
                "conditions": [{"type": "Accepted", "status": "True"}],
                "ruleCount": 2,
                "proxies": {"targeted": 3, "applied": 2, "pending": ["shop/b"]}
            }),
        ));
        assert_eq!(
            (s.accepted.as_str(), s.now.as_str()),
            ("True", "2 rules in force")
        );
        assert_eq!(proxies(&s), "2/3 (waiting: shop/b)");
    }

    #[test]
    fn a_refused_resource_says_why() {
        let s = summarize(&resource(
            "AccessPolicy",
            serde_json::json!({
                "conditions": [{"type": "Accepted", "status": "False",
                    "message": "spec.rules[0].from[0].identity: not a SPIFFE ID"}],
                "phase": "Auditing",
            }),
        ));
        assert_eq!(s.accepted, "False");
        assert_eq!(
            s.message.as_deref(),
            Some("spec.rules[0].from[0].identity: not a SPIFFE ID")
        );
        assert!(render(&[s], true).contains("not a SPIFFE ID"));
    }

    #[test]
    fn a_rollout_shows_its_phase_percent_and_plaintext_sources() {
        let s = summarize(&resource(
            "EncryptionPolicy",
            serde_json::json!({
                "conditions": [{"type": "Accepted", "status": "True"},
                               {"type": "SafeToEnforce", "status": "False"}],
                "phase": "RollingOut", "currentPercent": 50,
                "plaintextSources": [{"address": "10.0.0.1", "requests": 3}],
                "proxies": {"targeted": 2, "applied": 2}
            }),
        ));
        assert_eq!(
            s.now,
            "RollingOut 50% of callers on mTLS, not safe to enforce, 1 plaintext source(s)"
        );
        assert_eq!(proxies(&s), "2/2");
    }

    #[test]
    fn a_resource_without_status_says_so() {
        let s = summarize(&Resource {
            kind: "SelfHealing".into(),
            namespace: "shop".into(),
            name: "h".into(),
            status: None,
        });
        assert_eq!(s.accepted, "Unknown");
        assert!(s.now.starts_with("no status yet"), "{}", s.now);
    }
}
