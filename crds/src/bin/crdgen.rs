//! `crdgen`: writes braid's CustomResourceDefinitions as YAML.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// Writes the braid CRDs (TrafficRoute, EncryptionPolicy, SelfHealing, AccessPolicy) as
/// apiextensions.k8s.io/v1 YAML, one file per kind.
#[derive(Debug, Parser)]
#[command(name = "crdgen", version)]
struct Cli {
    /// Directory to write into.
    #[arg(long, default_value = "manifests/crds")]
    out_dir: PathBuf,
    /// Write nothing; fail if a file in --out-dir differs from what would be written.
    #[arg(long)]
    check: bool,
    /// Write the CRD reference (Markdown) to this file instead of the manifests.
    #[arg(long, value_name = "FILE")]
    docs: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(path) = &cli.docs {
        let md = braid_crds::reference::markdown()?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(path, md).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
        return Ok(());
    }
    let mut stale = Vec::new();
    for (file, yaml) in braid_crds::render::manifests()? {
        let path = cli.out_dir.join(file);
        if cli.check {
            let current = std::fs::read_to_string(&path).unwrap_or_default();
            if current != yaml {
                stale.push(path.display().to_string());
            }
        } else {
            std::fs::create_dir_all(&cli.out_dir)
                .with_context(|| format!("creating {}", cli.out_dir.display()))?;
            std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
            println!("wrote {}", path.display());
        }
    }
    if !stale.is_empty() {
        anyhow::bail!("stale CRD manifests: {}; run `make crds`", stale.join(", "));
    }
    Ok(())
}
