//! `braidctl explain request POD --to SERVICE`: the calling pod's proxy works out how it
//! would send the request (its `/explain`, its own routing code on its live config), and,
//! when the server's proxy is reachable, the server's proxy works out whether it lets the
//! request in (its own authorization code).

use braid_api::explain::{EXPLAIN_PATH, EndpointView, Explanation, Inbound, Outbound};
use serde::Serialize;

use crate::cli::{Global, InboundArgs, RequestArgs, RequestFlags};
use crate::mesh::{Admin, Mesh};
use crate::output::{Tone, paint};

/// What `explain request` prints.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestExplanation {
    /// The caller's proxy's answer.
    pub caller: Explanation,
    /// The server's proxy's answer, when it was asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<Explanation>,
    /// Why the server's proxy was not asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_not_asked: Option<String>,
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay).
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `name=value` or `name:value` as the proxy's `name:value`.
fn header(h: &str) -> anyhow::Result<String> {
    // Whichever separator comes first: `a=b:c` and `a: b=c` both name header `a`.
    let (name, value) = h
        .find(['=', ':'])
        .map(|i| (&h[..i], &h[i + 1..]))
        .filter(|(n, _)| !n.trim().is_empty())
        .ok_or_else(|| {
            anyhow::anyhow!("--header {h:?}: give name=value, e.g. --header x-user=alice")
        })?;
    Ok(format!("{}:{}", name.trim(), value.trim()))
}

/// `items` joined by `separator`, or `none` when there are none.
fn listed(items: &[String], separator: &str, none: &str) -> String {
    match items.is_empty() {
        true => none.to_owned(),
        false => items.join(separator),
    }
}

/// The query shared by both questions: method, path and headers.
fn request_query(r: &RequestFlags) -> anyhow::Result<String> {
    let mut q = format!("method={}&path={}", encode(&r.method), encode(&r.path));
    for h in &r.headers {
        q.push_str(&format!("&header={}", encode(&header(h)?)));
    }
    Ok(q)
}

/// Asks `pod`'s proxy `query` and checks the answer is that pod's.
async fn ask(global: &Global, mesh: &Mesh, pod: &str, query: &str) -> anyhow::Result<Explanation> {
    let admin = mesh.proxy_admin(global, pod).await?;
    let answer: Explanation = admin
        .get_json(query, global.timeout)
        .await
        .map_err(|e| anyhow::anyhow!("asking {pod}'s proxy: {e}"))?;
    crate::commands::proxy_config::same_pod(&answer.pod, pod, global.namespace.as_deref(), &admin)?;
    Ok(answer)
}

/// Runs `braidctl explain inbound`.
pub async fn run_inbound(
    global: &Global,
    args: &InboundArgs,
) -> anyhow::Result<std::process::ExitCode> {
    let mut q = format!(
        "{EXPLAIN_PATH}?inbound={}&{}",
        args.port,
        request_query(&args.request)?
    );
    if let Some(id) = &args.identity {
        q.push_str(&format!("&identity={}", encode(id)));
    }
    if let Some(a) = args.address {
        q.push_str(&format!("&address={}", encode(&a.to_string())));
    }
    let mesh = Mesh::from(global).await?;
    let answer = ask(global, &mesh, &args.pod, &q).await?;
    crate::output::print(global.output, &answer, || {
        let mut out = String::new();
        if let Some(i) = &answer.inbound {
            out.push_str(&format!(
                "REQUEST   {} {} from {}{}\n",
                answer.request.method,
                answer.request.path,
                i.identity.as_deref().unwrap_or("a plaintext caller"),
                i.address
                    .as_deref()
                    .map_or_else(String::new, |a| format!(" at {a}"))
            ));
            render_inbound(&mut out, &answer.pod, i);
        }
        out
    })?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// Runs `braidctl explain request`.
pub async fn run(global: &Global, args: &RequestArgs) -> anyhow::Result<std::process::ExitCode> {
    let common = request_query(&args.request)?;
    let path = format!("{EXPLAIN_PATH}?to={}&{common}", encode(&args.to));
    let mesh = Mesh::from(global).await?;
    let caller = ask(global, &mesh, &args.pod, &path).await?;
    let mut answer = RequestExplanation {
        caller,
        ..Default::default()
    };
    let address: Option<std::net::SocketAddr> = answer
        .caller
        .outbound
        .as_ref()
        .and_then(first_endpoint)
        .and_then(|e| e.address.parse().ok());
    // The server's proxy: the address given, or in a cluster the pod at the endpoint's
    // address, port-forwarded.
    let server = match (args.server_admin, address) {
        (Some(admin), _) => Some(Admin::Addr(admin)),
        (None, Some(endpoint)) => mesh.proxy_admin_at(endpoint.ip()).await?,
        (None, None) => None,
    };
    match (server, address) {
        (Some(server), Some(endpoint)) => {
            let mut q = format!("{EXPLAIN_PATH}?inbound={}&{common}", endpoint.port());
            if first_endpoint_mtls(&answer.caller).is_some()
                && let Some(id) = &answer.caller.identity
            {
                q.push_str(&format!("&identity={}", encode(id)));
            }
            if let Some(a) = args.address {
                q.push_str(&format!("&address={}", encode(&a.to_string())));
            }
            answer.server = Some(
                server
                    .get_json(&q, global.timeout)
                    .await
                    .map_err(|e| anyhow::anyhow!("asking the server's proxy: {e}"))?,
            );
        }
        (_, None) => {
            answer.server_not_asked = Some("the request goes nowhere, so no server decides".into())
        }
        (None, Some(endpoint)) => {
            answer.server_not_asked = Some(match &mesh {
                Mesh::Dir(_) => "the server's proxy was not asked (pass --server-admin ADDR to include its AccessPolicies)".into(),
                Mesh::Kube(_) => format!(
                    "no meshed pod runs at {}, so no proxy of the mesh decides",
                    endpoint.ip()
                ),
            })
        }
    }
    crate::output::print(global.output, &answer, || render(&answer))?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// The endpoint the question about the server is asked for: the first the request may go
/// to (every endpoint of a group shares its server's policies in a Deployment).
fn first_endpoint(o: &Outbound) -> Option<&EndpointView> {
    o.groups
        .iter()
        .filter(|g| g.percent > 0.0)
        .flat_map(|g| &g.endpoints)
        .chain(&o.endpoints)
        .next()
}

fn first_endpoint_mtls(e: &Explanation) -> Option<&str> {
    e.outbound
        .as_ref()
        .and_then(first_endpoint)?
        .mtls
        .as_deref()
}

fn endpoint(e: &EndpointView) -> String {
    let mut s = e.address.clone();
    match &e.mtls {
        Some(id) => s.push_str(&format!(" (mTLS, expects {id})")),
        None => s.push_str(" (plaintext)"),
    }
    if e.ejected {
        s.push_str(&paint(" EJECTED", Tone::Bad));
    }
    s
}

/// The explanation in words.
pub fn render(x: &RequestExplanation) -> String {
    let c = &x.caller;
    let mut out = String::new();
    let headers: Vec<String> = c
        .request
        .headers
        .iter()
        .map(|(n, v)| format!("{n}: {v}"))
        .collect();
    out.push_str(&format!(
        "REQUEST   {} {}",
        c.request.method, c.request.path
    ));
    if !headers.is_empty() {
        out.push_str(&format!("  [{}]", headers.join("; ")));
    }
    out.push('\n');
    out.push_str(&format!(
        "FROM      {} ({}), config {}\n",
        c.pod,
        c.identity.as_deref().unwrap_or("no identity"),
        c.config_version
    ));
    if let Some(o) = &c.outbound {
        render_outbound(&mut out, o);
    }
    match (&x.server, &x.server_not_asked) {
        (Some(s), _) => {
            if let Some(i) = &s.inbound {
                render_inbound(&mut out, &s.pod, i);
            }
        }
        (None, Some(why)) => out.push_str(&format!("SERVER    {why}\n")),
        (None, None) => {}
    }
    out
}

fn render_outbound(out: &mut String, o: &Outbound) {
    out.push_str(&format!("TO        {} ({})\n", o.target, o.protocol));
    match &o.route {
        None => out.push_str("ROUTE     no TrafficRoute: every endpoint of the service serves\n"),
        Some(route) => {
            out.push_str(&format!("ROUTE     TrafficRoute {route}\n"));
            for r in &o.rules {
                let (mark, tone) = match r.matched {
                    true => ("✔", Tone::Good),
                    false => ("✘", Tone::Bad),
                };
                out.push_str(&format!(
                    "  {} rule {}: {}\n",
                    paint(mark, tone),
                    r.name,
                    r.why
                ));
            }
        }
    }
    if let Some(e) = &o.error {
        out.push_str(&format!(
            "RESULT    {}\n",
            paint(&format!("fails at once: {e}"), Tone::Bad)
        ));
        return;
    }
    for (i, g) in o.groups.iter().enumerate() {
        let endpoints: Vec<String> = g.endpoints.iter().map(endpoint).collect();
        out.push_str(&format!(
            "{}group {} ({}%): {}\n",
            if i == 0 { "GOES TO   " } else { "          " },
            g.name,
            g.percent,
            listed(&endpoints, ", ", "no endpoints")
        ));
    }
    if o.groups.is_empty() {
        let endpoints: Vec<String> = o.endpoints.iter().map(endpoint).collect();
        out.push_str(&format!(
            "GOES TO   any endpoint: {}\n",
            listed(&endpoints, ", ", "none")
        ));
    }
    let p = &o.policy;
    let mut policy = Vec::new();
    if let Some(ms) = p.timeout_ms {
        policy.push(format!("deadline {ms} ms"));
    }
    if let Some(r) = &p.retries {
        policy.push(format!("retries: {r}"));
    }
    policy.extend(p.faults.iter().map(|f| format!("fault: {f}")));
    if let Some(m) = &p.mirror {
        policy.push(format!("mirror: {m}"));
    }
    if let Some(r) = &p.rate_limit {
        policy.push(format!("rate limit: {r}"));
    }
    out.push_str(&format!(
        "POLICY    {}\n",
        listed(&policy, "; ", "no deadline, retries, faults or mirror")
    ));
}

fn render_inbound(out: &mut String, pod: &str, i: &Inbound) {
    if i.address.is_none() && !i.policies.is_empty() {
        out.push_str(
            "NOTE      the caller's address was not given (--address): rules naming pods by workloadLabels were judged without it\n",
        );
    }
    let verdict = match (i.allowed, &i.refused_by) {
        (true, _) => paint("allowed", Tone::Good),
        (false, Some(by)) => paint(&format!("REFUSED: {by}"), Tone::Bad),
        (false, None) => paint("REFUSED", Tone::Bad),
    };
    out.push_str(&format!(
        "SERVER    {pod}, port {} (mTLS {}): {verdict}\n",
        i.port, i.tls_mode
    ));
    for p in &i.policies {
        out.push_str(&format!(
            "  AccessPolicy {} ({} {}): {}{}\n",
            p.name,
            p.action,
            p.mode,
            p.outcome
                .as_deref()
                .unwrap_or("not reached (already refused)"),
            p.matched_rule.as_deref().map_or_else(
                || ", no rule matches".to_owned(),
                |r| format!(", rule {r} matches")
            )
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use braid_api::explain::{AskedRequest, GroupShare, PolicyVerdict, RuleVerdict};

    #[test]
    fn query_values_are_encoded_and_headers_take_either_separator() {
        assert_eq!(encode("/a b?c"), "%2Fa%20b%3Fc");
        assert_eq!(header("x-user=alice").unwrap(), "x-user:alice");
        assert_eq!(header("x-user: a=b").unwrap(), "x-user:a=b");
        let err = header("nothing").unwrap_err().to_string();
        assert!(
            err.starts_with("--header \"nothing\": give name=value"),
            "{err}"
        );
    }

    #[test]
    fn an_explanation_reads_rule_by_rule() {
        let x = RequestExplanation {
            caller: Explanation {
                pod: "shop/client".into(),
                config_version: "v1".into(),
                identity: Some("spiffe://cluster.local/ns/shop/sa/client".into()),
                request: AskedRequest {
                    method: "GET".into(),
                    path: "/".into(),
                    headers: vec![],
                },
                outbound: Some(Outbound {
                    target: "payments.shop:80".into(),
                    protocol: "http".into(),
                    route: Some("shop/pay".into()),
                    rules: vec![
                        RuleVerdict {
                            name: "transfers".into(),
                            matched: false,
                            why: "match[0]: header type is absent".into(),
                        },
                        RuleVerdict {
                            name: "default".into(),
                            matched: true,
                            why: "no match conditions: matches every request".into(),
                        },
                    ],
                    rule: Some("default".into()),
                    groups: vec![GroupShare {
                        name: "v1".into(),
                        percent: 100.0,
                        endpoints: vec![EndpointView {
                            address: "10.0.0.5:8080".into(),
                            mtls: None,
                            ejected: false,
                        }],
                    }],
                    ..Default::default()
                }),
                inbound: None,
            },
            server: Some(Explanation {
                pod: "shop/payments".into(),
                inbound: Some(Inbound {
                    port: 8080,
                    tls_mode: "Permissive".into(),
                    allowed: false,
                    refused_by: Some("AccessPolicy shop/lock".into()),
                    policies: vec![PolicyVerdict {
                        name: "shop/lock".into(),
                        action: "Allow".into(),
                        mode: "Enforce".into(),
                        matched_rule: None,
                        outcome: Some("Denied".into()),
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            server_not_asked: None,
        };
        let text = render(&x);
        assert!(
            text.contains("  ✘ rule transfers: match[0]: header type is absent\n"),
            "{text}"
        );
        assert!(
            text.contains("GOES TO   group v1 (100%): 10.0.0.5:8080 (plaintext)\n"),
            "{text}"
        );
        assert!(
            text.contains("SERVER    shop/payments, port 8080 (mTLS Permissive): REFUSED: AccessPolicy shop/lock\n"),
            "{text}"
        );
        assert!(
            text.contains("  AccessPolicy shop/lock (Allow Enforce): Denied, no rule matches\n"),
            "{text}"
        );
    }
}
