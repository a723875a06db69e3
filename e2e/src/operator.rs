//! The operator of a mesh: the real `braid-operator` on the directory source, running in
//! the hub namespace on the bridge's own address, so every pod reaches it directly.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::HarnessError;
use crate::netns::ip;

/// A sidecar's arguments (after the binary) and environment.
pub type SidecarCommand = (Vec<String>, Vec<(String, String)>);

/// The namespace every e2e workload is registered in.
pub const NAMESPACE: &str = "shop";

/// A running operator.
pub struct Operator {
    /// Where proxies connect (`https://` + this).
    pub listen: SocketAddr,
    dir: PathBuf,
    trust: PathBuf,
    hub: String,
    child: Child,
}

impl Operator {
    /// Starts `braid-operator` in `hub` on `addr` with `extra` flags, on a directory
    /// under `dir` holding `registry`, with one bootstrap token per pod in `pods` (each pod's service account
    /// is its name; its token is written to `<pod dir>/token`).
    pub(crate) fn start(
        hub: &str,
        addr: Ipv4Addr,
        dir: &Path,
        bin_dir: &Path,
        pods: &[(String, PathBuf)],
        registry: &str,
        extra: &[&str],
    ) -> Result<Self, HarnessError> {
        // The operator and its readiness probe meet on the hub's own address, which the
        // kernel delivers over loopback.
        ip(&["-n", hub, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            hub,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "br0",
        ])?;
        let source = dir.join("operator");
        std::fs::create_dir_all(&source)?;
        let mut tokens = String::new();
        for (i, (pod, pod_dir)) in pods.iter().enumerate() {
            let token = format!("e2e-{pod}-{}-{i}-0123456789abcdef", std::process::id());
            tokens.push_str(&format!(
                "- {{token: {token}, namespace: {NAMESPACE}, serviceAccount: {pod}, pod: {pod}}}\n"
            ));
            let path = pod_dir.join("token");
            std::fs::write(&path, &token)?;
            // The sidecar runs as UID 1337 and reads it.
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
        }
        let tokens_file = dir.join("operator-tokens.yaml");
        std::fs::write(&tokens_file, tokens)?;
        let trust = dir.join("operator-ca.pem");
        let listen = SocketAddr::new(addr.into(), 8443);
        let op_admin = SocketAddr::new(addr.into(), 9090);
        write_atomically(&source.join("registry.yaml"), registry)?;
        let log = std::fs::File::create(dir.join("operator.log"))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", hub])
            .arg(bin_dir.join("braid-operator"))
            .arg("--source")
            .arg(format!("dir:{}", source.display()))
            .arg("--bootstrap-tokens")
            .arg(&tokens_file)
            .args([
                "--listen",
                &listen.to_string(),
                "--admin-addr",
                &op_admin.to_string(),
            ])
            .args(["--tls-san", &addr.to_string(), "--poll-ms", "50"])
            .arg("--tls-trust-out")
            .arg(&trust)
            .args(extra)
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd.spawn().map_err(|e| HarnessError::Command {
            command: format!("{cmd:?}"),
            message: e.to_string(),
        })?;
        let op = Self {
            listen,
            dir: dir.to_owned(),
            trust,
            hub: hub.to_owned(),
            child,
        };
        op.wait_ready(bin_dir, op_admin)?;
        Ok(op)
    }

    fn wait_ready(&self, bin_dir: &Path, admin: SocketAddr) -> Result<(), HarnessError> {
        let app = bin_dir.join("braid-e2e-app").display().to_string();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let out = ip(&[
                "netns",
                "exec",
                &self.hub,
                &app,
                "get",
                &admin.to_string(),
                "--path",
                "/readyz",
                "--host",
                "operator",
            ]);
            if out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).starts_with("200"))
                && self.trust.exists()
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(HarnessError::Timeout(format!(
            "operator not ready:\n{}",
            self.log()
        )))
    }

    /// Replaces the registry file; the operator picks it up by itself.
    pub fn write_registry(&self, registry: &str) -> Result<(), HarnessError> {
        write_atomically(&self.dir.join("operator").join("registry.yaml"), registry)
    }

    /// The status the operator wrote for a resource (`kind` lower-case, e.g.
    /// `trafficroute`), as YAML; empty until there is one.
    pub fn status(&self, kind: &str, namespace: &str, name: &str) -> String {
        let file = format!("{kind}.{namespace}.{name}.yaml");
        std::fs::read_to_string(self.dir.join("operator").join(".status").join(file))
            .unwrap_or_default()
    }

    /// Writes a resource file (TrafficRoute, ...) into the operator's directory.
    pub fn write_resource(&self, name: &str, yaml: &str) -> Result<(), HarnessError> {
        write_atomically(&self.dir.join("operator").join(name), yaml)
    }

    /// The `braid-proxy` arguments and environment of pod `name`'s sidecar, taken from
    /// the container the injector writes, as kubelet would run it: its token volume is
    /// the pod's directory (where the harness wrote the token), its CA volume a
    /// directory holding this operator's certificate, its downward-API fields the pod's.
    pub fn sidecar_command(
        &self,
        name: &str,
        ip: Ipv4Addr,
        pod_dir: &Path,
    ) -> Result<SidecarCommand, HarnessError> {
        use braid_injector::inject::{OPERATOR_CA_DIR, TOKEN_DIR, proxy_container};
        let settings = braid_injector::settings::Settings {
            operator_url: format!("https://{}", self.listen),
            ..Default::default()
        };
        let container = proxy_container(&settings, &Default::default(), &[]);
        let ca_dir = self.dir.join("operator-ca-volume");
        std::fs::create_dir_all(&ca_dir)?;
        std::fs::set_permissions(&ca_dir, std::fs::Permissions::from_mode(0o755))?;
        std::fs::copy(&self.trust, ca_dir.join("ca.crt"))?;
        let mount = |arg: &str| {
            arg.replace(TOKEN_DIR, &pod_dir.display().to_string())
                .replace(OPERATOR_CA_DIR, &ca_dir.display().to_string())
        };
        let args = container
            .args
            .unwrap_or_default()
            .iter()
            .map(|a| mount(a))
            .collect();
        let mut env = Vec::new();
        for var in container.env.unwrap_or_default() {
            let field = var
                .value_from
                .and_then(|f| f.field_ref)
                .map(|f| f.field_path);
            let value = match field.as_deref() {
                Some("metadata.name") | Some("spec.serviceAccountName") => name.to_owned(),
                Some("metadata.namespace") => NAMESPACE.to_owned(),
                Some("status.podIP") => ip.to_string(),
                Some(other) => {
                    return Err(HarnessError::Missing(format!(
                        "the harness cannot fill the injector's env {} from {other}",
                        var.name
                    )));
                }
                None => var.value.unwrap_or_default(),
            };
            env.push((var.name, value));
        }
        Ok((args, env))
    }

    /// What the operator logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("operator.log")).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_atomically(path: &Path, text: &str) -> Result<(), HarnessError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
    std::fs::rename(tmp, path)?;
    Ok(())
}
