//! `braidctl version`: this braidctl's version, each operator replica's, and how many
//! proxies run each version, with any skew named.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::cli::Global;
use crate::output::{Tone, paint};

/// What `version` prints.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Versions {
    /// This braidctl.
    pub client: String,
    /// Each replica that answered: name, version.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub operators: Vec<(String, String)>,
    /// Proxies per version (`unknown`: it never said).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub proxies: BTreeMap<String, u32>,
    /// Why the mesh was not asked, when it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mesh: Option<String>,
}

/// Runs `braidctl version`: the client's version always; the mesh's when one is named.
pub async fn run(global: &Global) -> anyhow::Result<std::process::ExitCode> {
    let mut v = Versions {
        client: env!("CARGO_PKG_VERSION").to_owned(),
        ..Default::default()
    };
    match crate::commands::proxy_status::gather(global).await {
        Ok(report) => {
            v.operators = report
                .replicas
                .iter()
                .map(|r| (r.name.clone(), r.version.clone()))
                .collect();
            for p in &report.proxies {
                let version = p.proxy_version.clone().unwrap_or_else(|| "unknown".into());
                *v.proxies.entry(version).or_default() += 1;
            }
        }
        Err(e) => v.mesh = Some(e.to_string()),
    }
    crate::output::print(global.output, &v, || render(&v))?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// The versions in words, skew painted.
pub fn render(v: &Versions) -> String {
    let mut out = format!("braidctl   {}\n", v.client);
    if let Some(why) = &v.mesh {
        out.push_str(&format!("mesh       not asked: {why}\n"));
        return out;
    }
    let skewed = |version: &str| version != v.client && version != "unknown";
    for (name, version) in &v.operators {
        let shown = match skewed(version) {
            true => paint(&format!("{version} (braidctl is {})", v.client), Tone::Warn),
            false => version.clone(),
        };
        out.push_str(&format!("operator   {name}: {shown}\n"));
    }
    for (version, n) in &v.proxies {
        let operators_run = v.operators.iter().any(|(_, o)| o == version);
        let shown = match (operators_run, version.as_str()) {
            (_, "unknown") => paint(
                "unknown (a proxy older than its reports of version)",
                Tone::Warn,
            ),
            (true, _) => version.clone(),
            (false, _) => paint(
                &format!("{version} (skew: no operator runs it)"),
                Tone::Warn,
            ),
        };
        out.push_str(&format!("proxies    {n} × {shown}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew_is_named() {
        let v = Versions {
            client: "0.1.0".into(),
            operators: vec![("operator-0".into(), "0.1.0".into())],
            proxies: BTreeMap::from([("0.1.0".into(), 3), ("0.0.9".into(), 1)]),
            mesh: None,
        };
        let text = render(&v);
        assert!(
            text.contains("proxies    1 × 0.0.9 (skew: no operator runs it)\n"),
            "{text}"
        );
        assert!(text.contains("proxies    3 × 0.1.0\n"), "{text}");
    }
}
