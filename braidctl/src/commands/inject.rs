//! `braidctl inject` and `uninject`: the injector's offline injection (the code the
//! webhook runs), over YAML files or standard input, printed to standard output.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use braid_injector::native_sidecars::NativeSidecars;

use crate::cli::{Global, InjectCmd, UninjectCmd};
use crate::mesh::kube::KubeMesh;

/// The text of `-f` (`-`: standard input).
fn read_input(path: &Path) -> anyhow::Result<String> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("-f -: reading standard input")?;
        return Ok(text);
    }
    std::fs::read_to_string(path).with_context(|| format!("-f {}: cannot read it", path.display()))
}

/// Runs `braidctl inject`.
pub async fn run(global: &Global, args: &InjectCmd) -> anyhow::Result<ExitCode> {
    let text = read_input(&args.filename)?;
    // Offline, native sidecars unless told otherwise, as `braid-injector inject`;
    // `auto` asks the cluster braidctl's --kubeconfig and --context name.
    let native = match args.inject.native_sidecars.unwrap_or(NativeSidecars::On) {
        NativeSidecars::Auto => {
            let cluster = KubeMesh::connect(
                global.kubeconfig.as_deref(),
                global.context.as_deref(),
                &global.braid_namespace,
                global.timeout,
            )
            .await?;
            braid_injector::native_sidecars::detect(cluster.client()).await?
        }
        other => other.resolve().await?,
    };
    let out = braid_injector::offline::inject_documents(&text, &args.inject.settings(native))?;
    crate::output::write_out(&out)?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `braidctl uninject`.
pub fn run_uninject(args: &UninjectCmd) -> anyhow::Result<ExitCode> {
    let text = read_input(&args.filename)?;
    let out = braid_injector::offline::uninject_documents(&text)?;
    crate::output::write_out(&out)?;
    Ok(ExitCode::SUCCESS)
}
