//! Which Service a `TrafficRoute.spec.host` names.

use crate::registry::ObjectKey;

/// Resolves `host`, written in namespace `namespace`: a bare name is a Service of that
/// namespace; `name.ns`, `name.ns.svc` and `name.ns.svc.<cluster domain>` name a Service
/// of `ns`. Anything else is outside the cluster (`None`).
pub fn service_for_host(host: &str, namespace: &str, cluster_domain: &str) -> Option<ObjectKey> {
    let parts: Vec<&str> = host.split('.').collect();
    match parts.as_slice() {
        [name] => Some(ObjectKey::new(namespace, *name)),
        [name, ns] | [name, ns, "svc"] => Some(ObjectKey::new(*ns, *name)),
        [name, ns, "svc", rest @ ..] if rest.join(".") == cluster_domain => {
            Some(ObjectKey::new(*ns, *name))
        }
        _ => None,
    }
}

/// The names callers may use for a Service, fully qualified first.
pub fn hostnames(key: &ObjectKey, cluster_domain: &str) -> Vec<String> {
    let (name, ns) = (&key.name, &key.namespace);
    vec![
        format!("{name}.{ns}.svc.{cluster_domain}"),
        format!("{name}.{ns}.svc"),
        format!("{name}.{ns}"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_resolve_like_cluster_dns() {
        let cases = [
            ("payments", Some("shop/payments")),
            ("payments.bank", Some("bank/payments")),
            ("payments.bank.svc", Some("bank/payments")),
            ("payments.bank.svc.cluster.local", Some("bank/payments")),
            ("payments.bank.svc.other.domain", None),
            ("api.example.com", None),
        ];
        for (host, want) in cases {
            let got = service_for_host(host, "shop", "cluster.local").map(|k| k.to_string());
            assert_eq!(got.as_deref(), want, "{host}");
        }
    }
}
