//! A table of invalid resources. For each: the exact field paths `validate()` reports, and
//! what the API server does with it — refuses it (schema or CEL), or accepts it because
//! the rule cannot be written in the schema for 1.28, which the case says and why.
//! Every CEL rule in the CRDs must be triggered by some case, and for every case the
//! server refuses, validate() must refuse it too: the directory source and clusters
//! without CEL get the same protection.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeSet;

use kube::core::cel::{ErrorKind, Validator};
use serde_json::{Value, json};
use support::{api_server_errors, braid_validate, schema_of};

/// What the API server does with the case.
enum Server {
    /// Refuses it; some error's path starts with this.
    Refuses(&'static str),
    /// Accepts it: only validate() can tell. The text says why the schema cannot.
    Accepts(&'static str),
}

struct Case {
    name: &'static str,
    object: Value,
    /// Exactly the paths validate() must report.
    paths: &'static [&'static str],
    /// Text the first validate() message must contain (says what to do).
    message: &'static str,
    server: Server,
}

fn traffic_route() -> Value {
    json!({
        "apiVersion": "braid.dev/v1alpha1",
        "kind": "TrafficRoute",
        "metadata": {"name": "payments", "namespace": "shop"},
        "spec": {
            "host": "payments",
            "groups": [
                {"name": "Group_1", "labels": {"zone": "a"}},
                {"name": "Group_2", "labels": {"zone": "b"}},
            ],
            "rules": [
                {
                    "name": "transfers",
                    "match": [{"headers": [{"name": "type", "exact": "transfer"}], "path": {"prefix": "/api"}}],
                    "route": [{"group": "Group_2", "weight": 100}],
                    "timeout": "2s",
                },
                {
                    "name": "default",
                    "route": [{"group": "Group_1", "weight": 90}, {"group": "Group_2", "weight": 10}],
                },
            ],
        },
    })
}

fn encryption_policy() -> Value {
    json!({
        "apiVersion": "braid.dev/v1alpha1",
        "kind": "EncryptionPolicy",
        "metadata": {"name": "shop", "namespace": "shop"},
        "spec": {
            "mode": "Permissive",
            "rollout": {"percent": 0, "auto": {"steps": [10, 25, 50, 100], "interval": "5m", "enforceStrict": true}},
        },
    })
}

fn self_healing() -> Value {
    json!({
        "apiVersion": "braid.dev/v1alpha1",
        "kind": "SelfHealing",
        "metadata": {"name": "payments", "namespace": "shop"},
        "spec": {
            "selector": {"matchLabels": {"app": "payments"}},
            "outlierDetection": {"consecutiveErrors": 5, "errorRate": {"threshold": 0.5, "minRequests": 20, "window": "10s"}},
            "healing": {"action": "RestartPod", "cooldown": "2m"},
            "overloadProtection": {"signal": "cpu", "target": 0.75},
        },
    })
}

fn access_policy() -> Value {
    json!({
        "apiVersion": "braid.dev/v1alpha1",
        "kind": "AccessPolicy",
        "metadata": {"name": "payments-callers", "namespace": "shop"},
        "spec": {
            "selector": {"matchLabels": {"app": "payments"}},
            "ports": [8080],
            "mode": "Audit",
            "rollout": {"interval": "10m"},
            "rules": [
                {"name": "checkout", "from": [{"serviceAccount": "checkout"}, {"namespace": "ops"}]},
                {
                    "from": [{"workloadLabels": {"app": "reports"}, "namespace": "finance"}],
                    "http": {"methods": ["GET"], "paths": [{"prefix": "/public"}]},
                },
            ],
        },
    })
}

fn with(mut base: Value, edit: impl FnOnce(&mut Value)) -> Value {
    edit(&mut base["spec"]);
    base
}

fn cases() -> Vec<Case> {
    use Server::{Accepts, Refuses};
    vec![
        // ---- TrafficRoute ----
        Case {
            name: "route names a group that does not exist",
            object: with(traffic_route(), |s| {
                s["rules"][1]["route"][0]["group"] = json!("Group_3")
            }),
            paths: &["spec.rules[1].route[0].group"],
            message: r#"no group "Group_3" in spec.groups (have: Group_1, Group_2)"#,
            server: Refuses("spec"),
        },
        Case {
            name: "route weights sum to 110",
            object: with(traffic_route(), |s| {
                s["rules"][1]["route"][1]["weight"] = json!(20)
            }),
            paths: &["spec.rules[1].route"],
            message: "weights sum to 110; make them sum to 100",
            server: Refuses("spec.rules[1].route"),
        },
        Case {
            name: "a weight above 100",
            object: with(traffic_route(), |s| {
                s["rules"][1]["route"] = json!([{"group": "Group_1", "weight": 150}])
            }),
            paths: &["spec.rules[1].route[0].weight", "spec.rules[1].route"],
            message: "150 is out of range: use a value from 0 to 100",
            server: Refuses("spec.rules[1].route[0].weight"),
        },
        Case {
            name: "two omitted weights default to 100 each",
            object: with(traffic_route(), |s| {
                s["rules"][1]["route"] = json!([{"group": "Group_1"}, {"group": "Group_2"}])
            }),
            paths: &["spec.rules[1].route"],
            message: "weights sum to 200",
            server: Refuses("spec.rules[1].route"),
        },
        Case {
            name: "header match with both exact and prefix",
            object: with(traffic_route(), |s| {
                s["rules"][0]["match"][0]["headers"][0]["prefix"] = json!("tr")
            }),
            paths: &["spec.rules[0].match[0].headers[0]"],
            message: "set exactly one of exact, prefix, regex, present (found exact and prefix)",
            server: Refuses("spec.rules[0].match[0].headers[0]"),
        },
        Case {
            name: "header match with no condition",
            object: with(traffic_route(), |s| {
                s["rules"][0]["match"][0]["headers"][0] = json!({"name": "type"})
            }),
            paths: &["spec.rules[0].match[0].headers[0]"],
            message: "(none is set)",
            server: Refuses("spec.rules[0].match[0].headers[0]"),
        },
        Case {
            name: "path match with both prefix and regex",
            object: with(traffic_route(), |s| {
                s["rules"][0]["match"][0]["path"]["regex"] = json!("^/api/.*")
            }),
            paths: &["spec.rules[0].match[0].path"],
            message: "set exactly one of exact, prefix, regex (found prefix and regex)",
            server: Refuses("spec.rules[0].match[0].path"),
        },
        Case {
            name: "mirror to a group that does not exist",
            object: with(traffic_route(), |s| {
                s["rules"][1]["mirror"] = json!({"group": "shadow", "percent": 5})
            }),
            paths: &["spec.rules[1].mirror.group"],
            message: r#"no group "shadow" in spec.groups"#,
            server: Refuses("spec"),
        },
        Case {
            name: "route to a group when spec.groups is absent",
            object: with(traffic_route(), |s| {
                s.as_object_mut().unwrap().remove("groups");
                s["rules"] = json!([{"name": "all", "route": [{"group": "stable"}]}]);
            }),
            paths: &["spec.rules[0].route[0].group"],
            message: "spec.groups is empty; add a group",
            server: Refuses("spec"),
        },
        Case {
            name: "mirror percent above 100",
            object: with(traffic_route(), |s| {
                s["rules"][1]["mirror"] = json!({"group": "Group_2", "percent": 120})
            }),
            paths: &["spec.rules[1].mirror.percent"],
            message: "120 is not a percentage",
            server: Refuses("spec.rules[1].mirror.percent"),
        },
        Case {
            name: "abort status outside 200..=599",
            object: with(traffic_route(), |s| {
                s["rules"][0]["fault"] = json!({"abort": {"percent": 1, "status": 700}})
            }),
            paths: &["spec.rules[0].fault.abort.status"],
            message: "700 is out of range: use a value from 200 to 599",
            server: Refuses("spec.rules[0].fault.abort.status"),
        },
        Case {
            name: "fault with neither delay nor abort",
            object: with(traffic_route(), |s| s["rules"][0]["fault"] = json!({})),
            paths: &["spec.rules[0].fault"],
            message: "set delay, abort or both",
            server: Refuses("spec.rules[0].fault"),
        },
        Case {
            name: "timeout that is not a duration",
            object: with(traffic_route(), |s| {
                s["rules"][0]["timeout"] = json!("2 seconds")
            }),
            paths: &["spec.rules[0].timeout"],
            message: "e.g. 500ms, 2s, 5m",
            server: Refuses("spec.rules[0].timeout"),
        },
        Case {
            name: "too many retry attempts",
            object: with(traffic_route(), |s| {
                s["rules"][0]["retries"] = json!({"attempts": 11, "on": ["reset"]})
            }),
            paths: &["spec.rules[0].retries.attempts"],
            message: "11 is out of range: use a value from 0 to 10",
            server: Refuses("spec.rules[0].retries.attempts"),
        },
        Case {
            name: "the same retry condition twice",
            object: with(traffic_route(), |s| {
                s["rules"][0]["retries"] = json!({"attempts": 2, "on": ["reset", "reset"]})
            }),
            paths: &["spec.rules[0].retries.on[1]"],
            message: "listed twice",
            server: Refuses("spec.rules[0].retries.on[1]"),
        },
        Case {
            name: "per-try timeout longer than the whole timeout",
            object: with(traffic_route(), |s| {
                s["rules"][0]["retries"] = json!({"attempts": 2, "perTryTimeout": "3s"})
            }),
            paths: &["spec.rules[0].retries.perTryTimeout"],
            message: "lower perTryTimeout or raise timeout",
            server: Refuses("spec.rules[0]"),
        },
        Case {
            name: "header regex that does not compile",
            object: with(traffic_route(), |s| {
                s["rules"][0]["match"][0]["headers"][0] =
                    json!({"name": "type", "regex": "(transfer"})
            }),
            paths: &["spec.rules[0].match[0].headers[0].regex"],
            message: "is not a valid regular expression",
            server: Accepts(
                "1.28's CEL cannot check that a string field is a valid regex; left to validate()",
            ),
        },
        Case {
            name: "two rules with the same name",
            object: with(traffic_route(), |s| {
                s["rules"][1]["name"] = json!("transfers")
            }),
            paths: &["spec.rules[1].name"],
            message: r#"duplicate rule name "transfers""#,
            server: Refuses("spec.rules[1]"),
        },
        Case {
            name: "two groups with the same name",
            object: with(traffic_route(), |s| {
                s["groups"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"name": "Group_1", "labels": {"zone": "c"}}))
            }),
            paths: &["spec.groups[2].name"],
            message: r#"duplicate group name "Group_1""#,
            server: Refuses("spec.groups[2]"),
        },
        Case {
            name: "host that is not a DNS name",
            object: with(traffic_route(), |s| s["host"] = json!("Payments_Svc")),
            paths: &["spec.host"],
            message: "use a Service name in this namespace",
            server: Refuses("spec.host"),
        },
        Case {
            name: "no rules at all",
            object: with(traffic_route(), |s| s["rules"] = json!([])),
            paths: &["spec.rules"],
            message: "at least one rule is needed",
            server: Refuses("spec.rules"),
        },
        Case {
            name: "a rule after a catch-all is unreachable",
            object: with(traffic_route(), |s| {
                let rules = s["rules"].as_array_mut().unwrap();
                rules.reverse();
            }),
            paths: &["spec.rules[1]"],
            message: r#"rule "transfers" is unreachable: rule "default" at spec.rules[0]"#,
            server: Refuses("spec.rules"),
        },
        Case {
            name: "group label key with a space",
            object: with(traffic_route(), |s| {
                s["groups"][0]["labels"] = json!({"bad key": "a"})
            }),
            paths: &["spec.groups[0].labels[\"bad key\"]"],
            message: "is not a valid label key",
            server: Accepts(
                "label-key syntax over map keys is too costly for 1.28's CEL budget; left to validate()",
            ),
        },
        Case {
            name: "more groups than maxItems",
            object: with(traffic_route(), |s| {
                s["groups"] = Value::Array(
                    (0..17).map(|i| json!({"name": format!("g{i}"), "labels": {"zone": format!("z{i}")}})).collect(),
                );
                s["rules"] = json!([{"name": "all"}]);
            }),
            paths: &["spec.groups"],
            message: "has 17 entries; at most 16 are allowed",
            server: Refuses("spec.groups"),
        },
        Case {
            name: "unknown HTTP method",
            object: with(traffic_route(), |s| {
                s["rules"][0]["match"][0]["method"] = json!("FETCH")
            }),
            paths: &["spec.rules[0].match[0].method"],
            message: "unknown variant `FETCH`",
            server: Refuses("spec.rules[0].match[0].method"),
        },
        Case {
            name: "exact path without a leading slash",
            object: with(traffic_route(), |s| {
                s["rules"][0]["match"][0]["path"] = json!({"exact": "api/transfer"})
            }),
            paths: &["spec.rules[0].match[0].path.exact"],
            message: "does not start with '/'",
            server: Refuses("spec.rules[0].match[0].path.exact"),
        },
        Case {
            name: "rate limit of zero requests per second",
            object: with(traffic_route(), |s| {
                s["rules"][0]["rateLimit"] = json!({"requestsPerSecond": 0})
            }),
            paths: &["spec.rules[0].rateLimit.requestsPerSecond"],
            message: "0 is out of range: use a value from 1 to 1000000",
            server: Refuses("spec.rules[0].rateLimit.requestsPerSecond"),
        },
        Case {
            name: "port zero",
            object: with(traffic_route(), |s| s["port"] = json!(0)),
            paths: &["spec.port"],
            message: "0 is out of range: use a value from 1 to 65535",
            server: Refuses("spec.port"),
        },
        Case {
            name: "group without labels",
            object: with(traffic_route(), |s| s["groups"][0]["labels"] = json!({})),
            paths: &["spec.groups[0].labels"],
            message: "a group needs at least one label",
            server: Refuses("spec.groups[0].labels"),
        },
        Case {
            name: "header name with a space",
            object: with(traffic_route(), |s| {
                s["rules"][0]["match"][0]["headers"][0]["name"] = json!("x user")
            }),
            paths: &["spec.rules[0].match[0].headers[0].name"],
            message: "is not an HTTP header name",
            server: Refuses("spec.rules[0].match[0].headers[0].name"),
        },
        Case {
            name: "retries.on written as a bare YAML 1.1 `on` key",
            object: with(traffic_route(), |s| {
                s["rules"][0]["retries"] = json!({"attempts": 2, "true": ["reset"]})
            }),
            paths: &["spec.rules[0].retries.true"],
            message: r#"unknown field "true""#,
            server: Refuses("spec.rules[0].retries.true"),
        },
        Case {
            name: "a misspelt field",
            object: with(traffic_route(), |s| {
                s["rules"][0]["retries"] = json!({"attempts": 2, "perTryTimout": "1s"})
            }),
            paths: &["spec.rules[0].retries.perTryTimout"],
            message: r#"unknown field "perTryTimout""#,
            server: Refuses("spec.rules[0].retries.perTryTimout"),
        },
        Case {
            name: "an empty path regex",
            object: with(traffic_route(), |s| {
                s["rules"][0]["match"][0]["path"] = json!({"regex": ""})
            }),
            paths: &["spec.rules[0].match[0].path.regex"],
            message: "is empty: give a pattern",
            server: Refuses("spec.rules[0].match[0].path.regex"),
        },
        Case {
            name: "a zero timeout",
            object: with(traffic_route(), |s| s["rules"][0]["timeout"] = json!("0s")),
            paths: &["spec.rules[0].timeout"],
            message: "0s is zero",
            server: Refuses("spec.rules[0].timeout"),
        },
        // ---- EncryptionPolicy ----
        Case {
            name: "no rollout steps",
            object: with(encryption_policy(), |s| {
                s["rollout"]["auto"]["steps"] = json!([])
            }),
            paths: &["spec.rollout.auto.steps"],
            message: "give at least one step",
            server: Refuses("spec.rollout.auto.steps"),
        },
        Case {
            name: "rollout steps not ascending",
            object: with(encryption_policy(), |s| {
                s["rollout"]["auto"]["steps"] = json!([10, 50, 25, 100])
            }),
            paths: &["spec.rollout.auto.steps[2]"],
            message: "25 does not come after 50",
            server: Refuses("spec.rollout.auto.steps"),
        },
        Case {
            name: "rollout steps not ending at 100",
            object: with(encryption_policy(), |s| {
                s["rollout"]["auto"]["steps"] = json!([10, 25, 50])
            }),
            paths: &["spec.rollout.auto.steps"],
            message: "the last step is 50; end at 100",
            server: Refuses("spec.rollout.auto.steps"),
        },
        Case {
            name: "Strict while a quarter of callers still send plaintext",
            object: with(encryption_policy(), |s| {
                s["mode"] = json!("Strict");
                s["rollout"] = json!({"percent": 25});
            }),
            paths: &["spec.mode"],
            message: "set rollout.percent to 100",
            server: Refuses("spec"),
        },
        Case {
            name: "Disabled with an automatic rollout",
            object: with(encryption_policy(), |s| s["mode"] = json!("Disabled")),
            paths: &["spec.mode"],
            message: "remove rollout or set mode Permissive",
            server: Refuses("spec"),
        },
        Case {
            name: "unknown mode",
            object: with(encryption_policy(), |s| s["mode"] = json!("Encrypted")),
            paths: &["spec.mode"],
            message: "unknown variant `Encrypted`",
            server: Refuses("spec.mode"),
        },
        Case {
            name: "rollout percent above 100",
            object: with(encryption_policy(), |s| {
                s["rollout"] = json!({"percent": 101})
            }),
            paths: &["spec.rollout.percent"],
            message: "101 is out of range: use a value from 0 to 100",
            server: Refuses("spec.rollout.percent"),
        },
        Case {
            name: "the same port overridden twice",
            object: with(
                encryption_policy(),
                |s| {
                    s["portOverrides"] = json!([{"port": 9090, "mode": "Disabled"}, {"port": 9090, "mode": "Strict"}])
                },
            ),
            paths: &["spec.portOverrides[1].port"],
            message: "port 9090 is overridden twice",
            server: Refuses("spec.portOverrides[1]"),
        },
        Case {
            name: "selector operator In without values",
            object: with(encryption_policy(), |s| {
                s["selector"] = json!({"matchExpressions": [{"key": "app", "operator": "In"}]})
            }),
            paths: &["spec.selector.matchExpressions[0].values"],
            message: "operator In needs at least one value",
            server: Refuses("spec.selector.matchExpressions[0]"),
        },
        Case {
            name: "interval in words",
            object: with(encryption_policy(), |s| {
                s["rollout"]["auto"]["interval"] = json!("5 minutes")
            }),
            paths: &["spec.rollout.auto.interval"],
            message: "is not a duration",
            server: Refuses("spec.rollout.auto.interval"),
        },
        Case {
            name: "error-rate increase above 1",
            object: with(encryption_policy(), |s| {
                s["rollout"]["auto"]["maxErrorRateIncrease"] = json!(2)
            }),
            paths: &["spec.rollout.auto.maxErrorRateIncrease"],
            message: "use a fraction from 0 to 1",
            server: Refuses("spec.rollout.auto.maxErrorRateIncrease"),
        },
        // ---- SelfHealing ----
        Case {
            name: "neither outlier detection nor overload protection",
            object: with(self_healing(), |s| {
                let m = s.as_object_mut().unwrap();
                m.remove("outlierDetection");
                m.remove("overloadProtection");
                m.remove("healing");
            }),
            paths: &["spec"],
            message: "set outlierDetection, overloadProtection or both",
            server: Refuses("spec"),
        },
        Case {
            name: "healing without outlier detection",
            object: with(self_healing(), |s| {
                s.as_object_mut().unwrap().remove("outlierDetection");
            }),
            paths: &["spec.healing"],
            message: "add outlierDetection",
            server: Refuses("spec"),
        },
        Case {
            name: "CPU target written as a percentage",
            object: with(self_healing(), |s| {
                s["overloadProtection"]["target"] = json!(75)
            }),
            paths: &["spec.overloadProtection.target"],
            message: "e.g. 0.75",
            server: Refuses("spec.overloadProtection"),
        },
        Case {
            name: "latency target of zero",
            object: with(self_healing(), |s| {
                s["overloadProtection"] = json!({"signal": "latency", "target": 0})
            }),
            paths: &["spec.overloadProtection.target"],
            message: "for signal latency use seconds above 0",
            server: Refuses("spec.overloadProtection"),
        },
        Case {
            name: "inflight target below one request",
            object: with(self_healing(), |s| {
                s["overloadProtection"] = json!({"signal": "inflight", "target": 0.5})
            }),
            paths: &["spec.overloadProtection.target"],
            message: "for signal inflight use 1 to 1000000",
            server: Refuses("spec.overloadProtection"),
        },
        Case {
            name: "maxLimit below minLimit",
            object: with(self_healing(), |s| {
                s["overloadProtection"]["minLimit"] = json!(50);
                s["overloadProtection"]["maxLimit"] = json!(20);
            }),
            paths: &["spec.overloadProtection.maxLimit"],
            message: "20 is below minLimit (50)",
            server: Refuses("spec.overloadProtection"),
        },
        Case {
            name: "unknown overload signal",
            object: with(self_healing(), |s| {
                s["overloadProtection"]["signal"] = json!("memory")
            }),
            paths: &["spec.overloadProtection.signal"],
            message: "unknown variant `memory`",
            server: Refuses("spec.overloadProtection.signal"),
        },
        Case {
            name: "unknown healing action",
            object: with(self_healing(), |s| s["healing"]["action"] = json!("Reboot")),
            paths: &["spec.healing.action"],
            message: "unknown variant `Reboot`",
            server: Refuses("spec.healing.action"),
        },
        Case {
            name: "ejection percent above 100",
            object: with(self_healing(), |s| {
                s["outlierDetection"]["maxEjectionPercent"] = json!(150)
            }),
            paths: &["spec.outlierDetection.maxEjectionPercent"],
            message: "150 is out of range",
            server: Refuses("spec.outlierDetection.maxEjectionPercent"),
        },
        Case {
            name: "error-rate threshold of zero",
            object: with(self_healing(), |s| {
                s["outlierDetection"]["errorRate"]["threshold"] = json!(0)
            }),
            paths: &["spec.outlierDetection.errorRate.threshold"],
            message: "use a fraction above 0",
            server: Refuses("spec.outlierDetection.errorRate"),
        },
        Case {
            name: "base ejection longer than the cap",
            object: with(self_healing(), |s| {
                s["outlierDetection"]["baseEjectionTime"] = json!("10m");
                s["outlierDetection"]["maxEjectionTime"] = json!("5m");
            }),
            paths: &["spec.outlierDetection.maxEjectionTime"],
            message: "is shorter than baseEjectionTime (10m)",
            server: Refuses("spec.outlierDetection"),
        },
        Case {
            name: "zero cooldown",
            object: with(self_healing(), |s| s["healing"]["cooldown"] = json!("0s")),
            paths: &["spec.healing.cooldown"],
            message: "is zero: use a duration longer than zero",
            server: Refuses("spec.healing.cooldown"),
        },
        Case {
            name: "no reporters required",
            object: with(self_healing(), |s| s["healing"]["minReporters"] = json!(0)),
            paths: &["spec.healing.minReporters"],
            message: "0 is out of range: use a value from 1 to 100",
            server: Refuses("spec.healing.minReporters"),
        },
        // ---- AccessPolicy ----
        Case {
            name: "a rollout that does not start from Audit",
            object: with(access_policy(), |s| s["mode"] = json!("Enforce")),
            paths: &["spec.mode"],
            message: "rollout starts from Audit",
            server: Refuses("spec"),
        },
        Case {
            name: "a source of two kinds",
            object: with(access_policy(), |s| {
                s["rules"][0]["from"][0]["identity"] = json!("spiffe://cluster.local/ns/shop/sa/x")
            }),
            paths: &["spec.rules[0].from[0]"],
            message: "set exactly one of identity, serviceAccount, namespace, workloadLabels, meshed, unauthenticated (found identity and serviceAccount)",
            server: Refuses("spec.rules[0].from[0]"),
        },
        Case {
            name: "a namespace beside an identity",
            object: with(access_policy(), |s| {
                s["rules"][0]["from"][1] = json!({"namespace": "ops", "meshed": true})
            }),
            paths: &["spec.rules[0].from[1]", "spec.rules[0].from[1].namespace"],
            message: "set exactly one of",
            server: Refuses("spec.rules[0].from[1]"),
        },
        Case {
            name: "an empty source",
            object: with(access_policy(), |s| s["rules"][0]["from"][1] = json!({})),
            paths: &["spec.rules[0].from[1]"],
            message: "(none is set)",
            server: Refuses("spec.rules[0].from[1]"),
        },
        Case {
            name: "meshed: false",
            object: with(access_policy(), |s| {
                s["rules"][0]["from"][1] = json!({"meshed": false})
            }),
            paths: &["spec.rules[0].from[1].meshed"],
            message: "meshed can only be true",
            server: Refuses("spec.rules[0].from[1]"),
        },
        Case {
            name: "an identity that is not a SPIFFE id",
            object: with(access_policy(), |s| {
                s["rules"][0]["from"][1] = json!({"identity": "shop/checkout"})
            }),
            paths: &["spec.rules[0].from[1].identity"],
            message: "write spiffe://<trust-domain>/ns/<namespace>/sa/<account>",
            server: Accepts(
                "a SPIFFE id's shape (and '*' only at the end) is checked by validate(); a CEL regex over it would add little for its cost",
            ),
        },
        Case {
            name: "a wildcard inside an identity",
            object: with(access_policy(), |s| {
                s["rules"][0]["from"][1] = json!({"identity": "spiffe://cluster.local/ns/*/sa/web"})
            }),
            paths: &["spec.rules[0].from[1].identity"],
            message: "or end a prefix with '/*'",
            server: Accepts("as above: validate() reads identities"),
        },
        Case {
            name: "a wildcard inside a segment",
            object: with(access_policy(), |s| {
                s["rules"][0]["from"][1] = json!({"identity": "spiffe://cluster.local/ns/ops*"})
            }),
            paths: &["spec.rules[0].from[1].identity"],
            message: "or end a prefix with '/*'",
            server: Accepts("as above: validate() reads identities"),
        },
        Case {
            name: "a rollout interval under 5s",
            object: with(access_policy(), |s| s["rollout"]["interval"] = json!("2s")),
            paths: &["spec.rollout.interval"],
            message: "is too short: use at least 5s",
            server: Refuses("spec.rollout.interval"),
        },
        Case {
            name: "an uppercase namespace",
            object: with(access_policy(), |s| {
                s["rules"][0]["from"][1] = json!({"namespace": "Ops"})
            }),
            paths: &["spec.rules[0].from[1].namespace"],
            message: "is not a namespace name",
            server: Accepts("name syntax is checked by validate(), as for TrafficRoute hosts"),
        },
        Case {
            name: "no rules",
            object: with(access_policy(), |s| s["rules"] = json!([])),
            paths: &["spec.rules"],
            message: "give at least one rule",
            server: Refuses("spec.rules"),
        },
        Case {
            name: "two rules of one name",
            object: with(access_policy(), |s| {
                s["rules"][1]["name"] = json!("checkout")
            }),
            paths: &["spec.rules[1].name"],
            message: "\"checkout\" names two rules",
            server: Accepts(
                "unique names among optional ones cannot be a list-map key; validate() points at the duplicate",
            ),
        },
        Case {
            name: "an empty http condition",
            object: with(access_policy(), |s| s["rules"][1]["http"] = json!({})),
            paths: &["spec.rules[1].http"],
            message: "give methods, paths or headers",
            server: Refuses("spec.rules[1].http"),
        },
        Case {
            name: "a path that is not absolute",
            object: with(access_policy(), |s| {
                s["rules"][1]["http"]["paths"][0] = json!({"prefix": "public"})
            }),
            paths: &["spec.rules[1].http.paths[0].prefix"],
            message: "does not start with '/'",
            server: Refuses("spec.rules[1].http.paths[0].prefix"),
        },
        Case {
            name: "a port listed twice",
            object: with(access_policy(), |s| s["ports"] = json!([8080, 8080])),
            paths: &["spec.ports[1]"],
            message: "port 8080 is listed twice",
            server: Refuses("spec.ports"),
        },
        Case {
            name: "an unknown action",
            object: with(access_policy(), |s| s["action"] = json!("Reject")),
            paths: &["spec.action"],
            message: "unknown variant `Reject`",
            server: Refuses("spec.action"),
        },
        Case {
            name: "a zero rollout interval",
            object: with(access_policy(), |s| s["rollout"]["interval"] = json!("0s")),
            paths: &["spec.rollout.interval"],
            message: "is zero",
            server: Refuses("spec.rollout.interval"),
        },
    ]
}

#[test]
fn the_bases_the_cases_start_from_are_valid() {
    for base in [
        traffic_route(),
        encryption_policy(),
        self_healing(),
        access_policy(),
    ] {
        assert_eq!(api_server_errors(&base), Vec::<String>::new(), "{base:#}");
        braid_validate(&base).unwrap();
    }
}

#[test]
fn the_table_is_large_enough() {
    assert!(
        cases().len() >= 25,
        "the issue asks for at least 25 invalid resources"
    );
}

#[test]
fn validate_reports_exactly_the_expected_paths() {
    let mut failures = Vec::new();
    for case in cases() {
        let Err(errors) = braid_validate(&case.object) else {
            failures.push(format!("{}: validate() accepted it", case.name));
            continue;
        };
        let got: BTreeSet<&str> = errors.paths().into_iter().collect();
        let want: BTreeSet<&str> = case.paths.iter().copied().collect();
        if got != want {
            failures.push(format!(
                "{}: paths {got:?}, want {want:?}\n{errors}",
                case.name
            ));
        }
        let first = errors
            .iter()
            .next()
            .map(|e| e.message.clone())
            .unwrap_or_default();
        if !first.contains(case.message) {
            failures.push(format!(
                "{}: message {first:?} lacks {:?}",
                case.name, case.message
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_api_server_refuses_or_accepts_as_the_table_says() {
    let mut failures = Vec::new();
    for case in cases() {
        let errors = api_server_errors(&case.object);
        match case.server {
            Server::Refuses(prefix) => {
                if !errors.iter().any(|e| e.starts_with(prefix)) {
                    failures.push(format!(
                        "{}: want the API server to refuse at {prefix}, got {errors:?}",
                        case.name
                    ));
                }
            }
            Server::Accepts(why) => {
                assert!(!why.is_empty());
                if !errors.is_empty() {
                    failures.push(format!(
                        "{}: marked validate()-only but the API server refuses it: {errors:?}",
                        case.name
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every CEL rule in the CRDs fires for at least one case, so each is proven to reject
/// what it claims to, and (by the test above) validate() rejects those cases too.
#[test]
fn every_cel_rule_is_exercised_by_the_table() {
    fn rules(schema: &Value, out: &mut BTreeSet<String>) {
        if let Some(list) = schema
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
        {
            for r in list {
                out.insert(r["rule"].as_str().unwrap().to_owned());
            }
        }
        match schema {
            Value::Object(m) => m.values().for_each(|v| rules(v, out)),
            Value::Array(a) => a.iter().for_each(|v| rules(v, out)),
            _ => {}
        }
    }
    let mut all = BTreeSet::new();
    for kind in [
        "TrafficRoute",
        "EncryptionPolicy",
        "SelfHealing",
        "AccessPolicy",
    ] {
        rules(&schema_of(kind), &mut all);
    }
    let mut fired = BTreeSet::new();
    for case in cases() {
        if !matches!(case.server, Server::Refuses(_)) {
            continue;
        }
        let schema = schema_of(case.object["kind"].as_str().unwrap());
        let mut body = case.object.clone();
        body.as_object_mut().unwrap().remove("metadata");
        // Validator::validate applies the schema's defaults first, as the API server does.
        if let Err(errs) = Validator::new().validate(&schema, &body, None) {
            for e in errs.iter() {
                // A rule that failed to evaluate proves nothing.
                if e.kind == ErrorKind::ValidationFailure {
                    fired.insert(e.rule.clone());
                }
            }
        }
    }
    let missed: Vec<&String> = all.difference(&fired).collect();
    assert!(
        missed.is_empty(),
        "CEL rules no case triggers:\n{missed:#?}"
    );
}
