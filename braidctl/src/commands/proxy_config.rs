//! `braidctl proxy-config POD [section]`: the proxy's own view of its config (its admin
//! port's `/config_dump`), as tables, or whole as JSON or YAML.

use braid_api::config::ProxyConfig;
use serde_json::Value;

use crate::cli::{Format, Global, ProxyConfigArgs, Section};
use crate::mesh::Mesh;
use crate::output::Table;

/// The proxy's config, checked to be `pod`'s.
pub async fn fetch(global: &Global, pod: &str) -> anyhow::Result<(Value, ProxyConfig)> {
    let mesh = Mesh::from(global).await?;
    let admin = mesh.proxy_admin(global, pod).await?;
    let raw: Value = admin
        .get_json("/config_dump", global.timeout)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "{e} (is {pod}'s proxy running? In directory mode braidctl reaches the proxy's admin port where it runs: --proxy-admin)"
            )
        })?;
    // Fields this braidctl does not know (a newer proxy) are left out of the tables,
    // not refused; `-o json` prints them all.
    let config: ProxyConfig = serde_json::from_value(raw.clone())
        .map_err(|e| anyhow::anyhow!("{admin}/config_dump is not a braid proxy config: {e}"))?;
    let node = &config.node;
    same_pod(
        &format!("{}/{}", node.namespace, node.workload),
        pod,
        global.namespace.as_deref(),
        &admin,
    )?;
    Ok((raw, config))
}

/// Refuses a proxy that is not `pod`'s (`namespace/name`, or `name` in `namespace`):
/// the admin address reached `found`'s.
pub fn same_pod(
    found: &str,
    pod: &str,
    namespace: Option<&str>,
    admin: &crate::mesh::Admin,
) -> anyhow::Result<()> {
    let (ns, name) = match pod.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (namespace, pod),
    };
    let (found_ns, found_name) = found.split_once('/').unwrap_or(("", found));
    if found_name != name || ns.is_some_and(|ns| ns != found_ns) {
        anyhow::bail!(
            "the proxy at {admin} is {found}'s, not {pod}'s: run braidctl where {pod}'s proxy runs, or give its --proxy-admin"
        );
    }
    Ok(())
}

/// Runs `braidctl proxy-config`.
pub async fn run(
    global: &Global,
    args: &ProxyConfigArgs,
) -> anyhow::Result<std::process::ExitCode> {
    let (raw, config) = fetch(global, &args.pod).await?;
    let data = match args.section {
        Section::Summary => raw,
        Section::Routes => raw["routes"].clone(),
        Section::Services | Section::Endpoints => raw["services"].clone(),
        Section::Tls => serde_json::json!({
            "identity": raw["node"]["identity"],
            "inbound": raw["inbound"]["tls"],
            "endpoints": raw["services"],
        }),
        Section::Listeners => raw["listeners"].clone(),
    };
    let wide = global.output == Format::Wide;
    crate::output::print(global.output, &data, || render(&config, args.section, wide))?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// The table of one section.
pub fn render(c: &ProxyConfig, section: Section, wide: bool) -> String {
    match section {
        Section::Summary => summary(c),
        Section::Services => services(c),
        Section::Endpoints => endpoints(c, wide),
        Section::Routes => routes(c, wide),
        Section::Tls => tls(c),
        Section::Listeners => listeners(c),
    }
}

fn text<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

fn summary(c: &ProxyConfig) -> String {
    let endpoints: usize = c
        .services
        .iter()
        .flat_map(|s| &s.groups)
        .map(|g| g.endpoints.len())
        .sum();
    let rules: usize = c.routes.iter().map(|r| r.rules.len()).sum();
    let mut out = String::new();
    out.push_str(&format!(
        "POD        {}/{}\n",
        c.node.namespace, c.node.workload
    ));
    out.push_str(&format!(
        "IDENTITY   {}\n",
        c.node.identity.as_ref().map_or("-", |i| i.0.as_str())
    ));
    out.push_str(&format!("VERSION    {}\n", c.version));
    out.push_str(&format!(
        "SERVICES   {} ({endpoints} endpoints)\n",
        c.services.len()
    ));
    out.push_str(&format!("ROUTES     {} ({rules} rules)\n", c.routes.len()));
    out.push_str(&format!(
        "INBOUND    mTLS {}, {} AccessPolicies, overload protection {}\n",
        c.inbound
            .tls
            .as_ref()
            .map_or("Disabled".into(), |t| text(&t.mode)),
        c.inbound.access_policies.len(),
        if c.inbound.overload_protection.is_some() {
            "on"
        } else {
            "off"
        }
    ));
    out.push_str(&format!("LISTENERS  {}\n", c.listeners.len()));
    out
}

fn services(c: &ProxyConfig) -> String {
    let mut t = Table::new(&[
        "SERVICE",
        "PORTS",
        "ADDRESSES",
        "GROUPS",
        "ENDPOINTS",
        "OUTLIER",
    ]);
    for s in c.services.iter() {
        let ports: Vec<String> = s
            .ports
            .iter()
            .map(|p| match p.target_port {
                Some(tp) if tp != p.port => format!("{}→{tp}/{}", p.port, text(&p.protocol)),
                _ => format!("{}/{}", p.port, text(&p.protocol)),
            })
            .collect();
        let vips: Vec<String> = s.vips.iter().map(ToString::to_string).collect();
        let groups: Vec<&str> = s.groups.iter().map(|g| g.name.as_str()).collect();
        let endpoints: usize = s.groups.iter().map(|g| g.endpoints.len()).sum();
        t.row(vec![
            format!("{}.{}", s.name, s.namespace),
            ports.join(","),
            vips.join(","),
            groups.join(","),
            endpoints.to_string(),
            if s.outlier_detection.is_some() {
                "on".into()
            } else {
                "-".into()
            },
        ]);
    }
    t.render()
}

fn endpoints(c: &ProxyConfig, wide: bool) -> String {
    let mut headers = vec![
        "SERVICE",
        "GROUP",
        "ADDRESS",
        "IDENTITY",
        "MESHED",
        "SERVER-MTLS",
    ];
    if wide {
        headers.push("LABELS");
    }
    let mut t = Table::new(&headers);
    for s in c.services.iter() {
        for g in &s.groups {
            for e in &g.endpoints {
                let mtls = match &e.tls {
                    None => "Disabled".to_owned(),
                    Some(tls) if text(&tls.mode) == "Permissive" => {
                        format!("Permissive ({}% of callers)", tls.rollout_percent)
                    }
                    Some(tls) => text(&tls.mode),
                };
                let mut row = vec![
                    format!("{}.{}", s.name, s.namespace),
                    g.name.clone(),
                    e.address.to_string(),
                    e.identity.as_ref().map_or("-".into(), |i| i.0.clone()),
                    e.meshed.to_string(),
                    mtls,
                ];
                if wide {
                    let labels: Vec<String> =
                        e.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    row.push(labels.join(","));
                }
                t.row(row);
            }
        }
    }
    t.render()
}

fn routes(c: &ProxyConfig, wide: bool) -> String {
    let mut headers = vec!["SERVICE", "PORT", "ROUTE", "RULE", "MATCH", "TO"];
    if wide {
        headers.extend(["TIMEOUT", "RETRIES", "FAULT", "MIRROR"]);
    }
    let mut t = Table::new(&headers);
    for r in c.routes.iter() {
        for rule in &r.rules {
            let matches = match rule.matches.is_empty() {
                true => "*".to_owned(),
                false => rule
                    .matches
                    .iter()
                    .map(|m| serde_json::to_string(m).unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join(" OR "),
            };
            let to: Vec<String> = rule
                .route
                .iter()
                .map(|w| format!("{}={}", w.group, w.weight))
                .collect();
            let mut row = vec![
                format!("{}.{}", r.service, r.namespace),
                r.port.map_or("*".into(), |p| p.to_string()),
                r.from.clone(),
                rule.name.clone(),
                matches,
                if to.is_empty() {
                    "any endpoint".into()
                } else {
                    to.join(",")
                },
            ];
            if wide {
                row.push(rule.timeout_ms.map_or("-".into(), |ms| format!("{ms}ms")));
                row.push(
                    rule.retries
                        .as_ref()
                        .map_or("-".into(), |r| serde_json::to_string(r).unwrap_or_default()),
                );
                row.push(
                    rule.fault
                        .as_ref()
                        .map_or("-".into(), |f| serde_json::to_string(f).unwrap_or_default()),
                );
                row.push(
                    rule.mirror
                        .as_ref()
                        .map_or("-".into(), |m| serde_json::to_string(m).unwrap_or_default()),
                );
            }
            t.row(row);
        }
    }
    t.render()
}

fn tls(c: &ProxyConfig) -> String {
    let mut out = format!(
        "IDENTITY   {}\n",
        c.node
            .identity
            .as_ref()
            .map_or("- (no mTLS identity)", |i| i.0.as_str())
    );
    match &c.inbound.tls {
        None => out.push_str("INBOUND    Disabled (plaintext only)\n"),
        Some(tls) => {
            out.push_str(&format!("INBOUND    {}", text(&tls.mode)));
            for p in &tls.port_overrides {
                out.push_str(&format!(", port {}: {}", p.port, text(&p.mode)));
            }
            out.push('\n');
        }
    }
    out.push('\n');
    out.push_str(&endpoints(c, false));
    out
}

fn listeners(c: &ProxyConfig) -> String {
    if c.listeners.is_empty() {
        return "No explicit listeners (traffic is captured by iptables).\n".into();
    }
    let mut t = Table::new(&["NAME", "BIND", "TARGET", "PROTOCOL", "SIDE"]);
    for l in &c.listeners {
        let target = match &l.target {
            braid_api::config::ListenerTarget::Service {
                name,
                namespace,
                port,
            } => {
                format!("{name}.{namespace}:{port}")
            }
            braid_api::config::ListenerTarget::Address(a) => a.to_string(),
        };
        t.row(vec![
            l.name.clone(),
            l.bind.to_string(),
            target,
            text(&l.protocol),
            text(&l.side),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ProxyConfig {
        serde_json::from_value(serde_json::json!({
            "version": "abc123",
            "node": {"workload": "client", "namespace": "shop", "serviceAccount": "client",
                     "identity": "spiffe://cluster.local/ns/shop/sa/client"},
            "services": [{"name": "payments", "namespace": "shop", "vips": ["10.96.0.10"],
                "ports": [{"port": 80, "targetPort": 8080, "protocol": "http"}],
                "groups": [{"name": "v1", "endpoints": [{"address": "10.0.0.5", "meshed": true,
                    "identity": "spiffe://cluster.local/ns/shop/sa/payments",
                    "tls": {"mode": "Permissive", "rolloutPercent": 50}}]}]}],
            "routes": [{"from": "shop/pay", "service": "payments", "namespace": "shop",
                "rules": [{"name": "all", "route": [{"group": "v1", "weight": 100}]}]}]
        }))
        .unwrap()
    }

    #[test]
    fn sections_render_as_tables() {
        let c = config();
        let s = render(&c, Section::Services, false);
        assert!(
            s.contains("payments.shop   80→8080/http   10.96.0.10   v1       1"),
            "{s}"
        );
        let e = render(&c, Section::Endpoints, false);
        assert!(e.contains("Permissive (50% of callers)"), "{e}");
        let r = render(&c, Section::Routes, false);
        assert!(r.contains("shop/pay   all    *       v1=100"), "{r}");
        assert!(render(&c, Section::Summary, false).contains("SERVICES   1 (1 endpoints)"));
    }

    #[test]
    fn another_pods_proxy_is_refused_naming_both() {
        let admin = &crate::mesh::Admin::Addr("127.0.0.1:15000".parse().unwrap());
        assert!(same_pod("shop/client", "shop/client", None, admin).is_ok());
        assert!(same_pod("shop/client", "client", None, admin).is_ok());
        let err = same_pod("shop/client", "shop/server", None, admin)
            .unwrap_err()
            .to_string();
        assert!(err.contains("is shop/client's, not shop/server's"), "{err}");
        assert!(same_pod("shop/client", "client", Some("other"), admin).is_err());
    }
}
