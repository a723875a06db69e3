//! `braidctl install --render`: this release's install manifests (the files of
//! `manifests/`, as `kubectl kustomize manifests/` renders them), with the image and
//! replica counts given, for `kubectl apply --server-side -f -` or a GitOps repository.

use std::process::ExitCode;

use crate::cli::{Format, Global, InstallArgs};
use crate::manifests::{FILES, IMAGE};

/// The image this release's files name.
pub fn release_image() -> String {
    format!("{IMAGE}:{}", env!("CARGO_PKG_VERSION"))
}

/// A bad `--image`, and why.
fn check_image(image: &str) -> anyhow::Result<()> {
    let bad = |why: &str| {
        anyhow::bail!(
            "--image {image:?}: {why}; give REPOSITORY:TAG or REPOSITORY@sha256:DIGEST, e.g. registry.example/braid:v1"
        )
    };
    if image.is_empty()
        || image
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '\'')
    {
        return bad("not an image reference");
    }
    if image.contains("://") {
        return bad("an image reference has no scheme");
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    if !last.contains(':') && !image.contains('@') {
        return bad(
            "no tag or digest (the proxy's image must be pinned, or nodes pull different ones)",
        );
    }
    Ok(())
}

/// The install's YAML with `args` applied.
pub fn render(args: &InstallArgs) -> anyhow::Result<String> {
    let image = args.image.clone().unwrap_or_else(release_image);
    check_image(&image)?;
    for (flag, n) in [
        ("--operator-replicas", args.operator_replicas),
        ("--injector-replicas", args.injector_replicas),
    ] {
        if n == 0 {
            anyhow::bail!(
                "{flag} 0: braid needs a running replica (the injector's webhook fails closed); give 1, or 2 or more for failover"
            );
        }
    }
    let mut out = String::new();
    for (file, text) in FILES {
        // A PodDisruptionBudget's minAvailable: 1 over one replica would hold every
        // node drain forever.
        let lone = match file {
            "operator/pdb.yaml" => args.operator_replicas == 1,
            "injector/pdb.yaml" => args.injector_replicas == 1,
            _ => false,
        };
        if lone {
            continue;
        }
        let mut text = text.replace(&release_image(), &image);
        let replicas = match file {
            "operator/deployment.yaml" => Some(args.operator_replicas),
            "injector/deployment.yaml" => Some(args.injector_replicas),
            _ => None,
        };
        if let Some(n) = replicas {
            text = text.replacen("\n  replicas: 2\n", &format!("\n  replicas: {n}\n"), 1);
        }
        if !out.is_empty() {
            out.push_str("---\n");
        }
        out.push_str(&format!("# Source: manifests/{file}\n"));
        out.push_str(text.trim_start_matches("---\n"));
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

/// Runs `braidctl install`.
pub async fn run(global: &Global, args: &InstallArgs) -> anyhow::Result<ExitCode> {
    if !args.render {
        anyhow::bail!(
            "braidctl install changes nothing in the cluster itself: pass --render and apply what it prints \
             (braidctl install --render | kubectl apply --server-side -f -), then run braidctl check"
        );
    }
    let yaml = render(args)?;
    match global.output {
        Format::Json => {
            use serde::Deserialize;
            let items: Vec<serde_json::Value> = serde_norway::Deserializer::from_str(&yaml)
                .map(serde_json::Value::deserialize)
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .filter(|v| !v.is_null())
                .collect();
            let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
            crate::output::write_out(&format!("{}\n", serde_json::to_string_pretty(&list)?))?;
        }
        _ => crate::output::write_out(&yaml)?,
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifests::documents;

    fn args(image: Option<&str>, operators: u32, injectors: u32) -> InstallArgs {
        InstallArgs {
            render: true,
            image: image.map(str::to_owned),
            operator_replicas: operators,
            injector_replicas: injectors,
        }
    }

    fn parse(yaml: &str) -> Vec<serde_json::Value> {
        use serde::Deserialize;
        serde_norway::Deserializer::from_str(yaml)
            .map(|d| serde_json::Value::deserialize(d).unwrap())
            .filter(|v| !v.is_null())
            .collect()
    }

    #[test]
    fn the_default_render_is_the_release_manifests() {
        let yaml = render(&args(None, 2, 2)).unwrap();
        let rendered = parse(&yaml);
        let release: Vec<serde_json::Value> = documents().into_iter().map(|(_, d)| d).collect();
        assert_eq!(rendered, release);
        assert!(yaml.starts_with("# Source: manifests/namespace.yaml\n"));
    }

    #[test]
    fn image_and_replicas_reach_every_place_that_names_them() {
        let yaml = render(&args(Some("registry.example/braid:v2"), 3, 1)).unwrap();
        assert!(!yaml.contains("ghcr.io/braid-mesh/braid"), "{yaml}");
        let docs = parse(&yaml);
        let deployment = |name: &str| {
            docs.iter()
                .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == name)
                .unwrap()
                .clone()
        };
        let op = deployment("braid-operator");
        let inj = deployment("braid-injector");
        assert_eq!(op["spec"]["replicas"], 3);
        assert_eq!(inj["spec"]["replicas"], 1);
        assert_eq!(
            op["spec"]["template"]["spec"]["containers"][0]["image"],
            "registry.example/braid:v2"
        );
        let container = &inj["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["image"], "registry.example/braid:v2");
        let env = container["env"].as_array().unwrap();
        let proxy = env
            .iter()
            .find(|e| e["name"] == "BRAID_PROXY_IMAGE")
            .unwrap();
        assert_eq!(proxy["value"], "registry.example/braid:v2");
        assert!(render(&args(Some("registry.example/braid@sha256:abc"), 2, 2)).is_ok());
        // One injector replica: no PodDisruptionBudget to hold a drain forever.
        let pdbs: Vec<&str> = docs
            .iter()
            .filter(|d| d["kind"] == "PodDisruptionBudget")
            .map(|d| d["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(pdbs, ["braid-operator"]);
    }

    #[test]
    fn bad_options_are_refused_naming_the_flag() {
        for (image, want) in [
            ("registry.example/braid", "no tag or digest"),
            ("https://registry.example/braid:v1", "no scheme"),
            ("braid :v1", "not an image reference"),
            ("", "not an image reference"),
        ] {
            let err = render(&args(Some(image), 2, 2)).unwrap_err().to_string();
            assert!(err.starts_with("--image ") && err.contains(want), "{err}");
        }
        let err = render(&args(None, 0, 2)).unwrap_err().to_string();
        assert!(err.starts_with("--operator-replicas 0: "), "{err}");
        let err = render(&args(None, 2, 0)).unwrap_err().to_string();
        assert!(err.starts_with("--injector-replicas 0: "), "{err}");
    }
}
