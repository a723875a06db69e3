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

/// A running operator (one replica of it).
pub struct Operator {
    /// Where proxies connect (`https://` + this).
    pub listen: SocketAddr,
    /// Its admin port (`/metrics`, `/readyz`).
    pub admin: SocketAddr,
    /// Its identity in leader election (`operator-<n>`).
    pub name: String,
    dir: PathBuf,
    trust: PathBuf,
    hub: String,
    bin_dir: PathBuf,
    command: Vec<std::ffi::OsString>,
    child: Option<Child>,
}

/// The directory source's directory under a mesh's `dir`.
fn source_dir(dir: &Path) -> PathBuf {
    dir.join("operator")
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
        let source = source_dir(dir);
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
        std::fs::write(dir.join("operator-tokens.yaml"), tokens)?;
        write_atomically(&source.join("registry.yaml"), registry)?;
        Self::replica(hub, addr, dir, bin_dir, 0, extra)
    }

    /// Starts replica `index` of the operator (0 is the first) on the same directory,
    /// tokens and address as [`Operator::start`] made, on ports 8443 + index (config) and
    /// 9090 + index (admin), named `operator-<index>`.
    pub(crate) fn replica(
        hub: &str,
        addr: Ipv4Addr,
        dir: &Path,
        bin_dir: &Path,
        index: u16,
        extra: &[&str],
    ) -> Result<Self, HarnessError> {
        let source = source_dir(dir);
        let trust = dir.join("operator-ca.pem");
        let listen = SocketAddr::new(addr.into(), 8443 + index);
        let admin = SocketAddr::new(addr.into(), 9090 + index);
        let name = format!("operator-{index}");
        let mut command: Vec<std::ffi::OsString> = vec![
            "netns".into(),
            "exec".into(),
            hub.into(),
            bin_dir.join("braid-operator").into(),
            "--source".into(),
            format!("dir:{}", source.display()).into(),
            "--bootstrap-tokens".into(),
            dir.join("operator-tokens.yaml").into(),
        ];
        for arg in [
            "--listen",
            &listen.to_string(),
            "--admin-addr",
            &admin.to_string(),
            "--pod-name",
            &name,
            // Every replica's certificate holds both names; replicas verify each other by
            // the first.
            "--tls-san",
            &format!("braid-operator.braid-system.svc,{addr}"),
            "--poll-ms",
            "50",
            "--tls-trust-out",
        ] {
            command.push(arg.into());
        }
        command.push(trust.clone().into());
        command.extend(extra.iter().map(Into::into));
        let mut op = Self {
            listen,
            admin,
            name,
            dir: dir.to_owned(),
            trust,
            hub: hub.to_owned(),
            bin_dir: bin_dir.to_owned(),
            command,
            child: None,
        };
        op.launch()?;
        Ok(op)
    }

    fn log_path(&self) -> PathBuf {
        if self.name == "operator-0" {
            self.dir.join("operator.log")
        } else {
            self.dir.join(format!("{}.log", self.name))
        }
    }

    fn launch(&mut self) -> Result<(), HarnessError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut cmd = Command::new("ip");
        cmd.args(&self.command)
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd.spawn().map_err(|e| HarnessError::Command {
            command: format!("{cmd:?}"),
            message: e.to_string(),
        })?;
        self.child = Some(child);
        self.wait_ready(&self.bin_dir, self.admin)
    }

    /// Kills this replica at once (SIGKILL: no lease released, no stream ended cleanly),
    /// as a crashed or evicted pod.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops this replica as Kubernetes deletes a pod (SIGTERM: it releases the Lease and
    /// ends its streams), and waits for it to exit.
    pub fn terminate(&mut self) -> Result<(), HarnessError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        crate::netns::run("kill", &["-TERM", &child.id().to_string()])?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(HarnessError::Timeout(format!(
                    "{} still running 20 s after SIGTERM",
                    self.name
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Starts this replica again, as it was started, and waits until it is ready.
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        self.kill();
        self.launch()
    }

    /// Whether this replica holds the election's Lease now.
    pub fn leads(&self) -> bool {
        let path = source_dir(&self.dir)
            .join(".status")
            .join("lease-braid-operator.json");
        let Ok(text) = std::fs::read_to_string(path) else {
            return false;
        };
        let lease: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        self.child.is_some() && lease["spec"]["holderIdentity"] == self.name.as_str()
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

    /// This replica's `/metrics` (empty when it does not answer).
    pub fn metrics(&self) -> String {
        let app = self.bin_dir.join("braid-e2e-app").display().to_string();
        let admin = self.admin.to_string();
        let out = ip(&[
            "netns", "exec", &self.hub, &app, "get", &admin, "--path", "/metrics", "--host",
            "operator",
        ]);
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// The operator's directory (its `--source dir:PATH`: what `braidctl --dir` takes).
    pub fn source_dir(&self) -> PathBuf {
        source_dir(&self.dir)
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
        self.sidecar_command_for(name, ip, pod_dir, &Default::default())
    }

    /// [`Self::sidecar_command`] for a pod whose `braid.dev/*` annotations say
    /// `overrides` (as the injector read them at admission).
    pub fn sidecar_command_for(
        &self,
        name: &str,
        ip: Ipv4Addr,
        pod_dir: &Path,
        overrides: &braid_injector::annotations::Overrides,
    ) -> Result<SidecarCommand, HarnessError> {
        use braid_injector::inject::{OPERATOR_CA_DIR, RUN_DIR, TOKEN_DIR, proxy_container};
        let settings = braid_injector::settings::Settings {
            operator_url: format!("https://{}", self.listen),
            ..Default::default()
        };
        let container = proxy_container(&settings, overrides, &[]);
        let ca_dir = self.dir.join("operator-ca-volume");
        std::fs::create_dir_all(&ca_dir)?;
        std::fs::set_permissions(&ca_dir, std::fs::Permissions::from_mode(0o755))?;
        std::fs::copy(&self.trust, ca_dir.join("ca.crt"))?;
        // The supervisor's emptyDir: the proxy's user's alone.
        let run_dir = pod_dir.join(RUN_VOLUME_DIR);
        std::fs::create_dir_all(&run_dir)?;
        std::os::unix::fs::chown(
            &run_dir,
            Some(crate::mesh::PROXY_UID),
            Some(crate::mesh::PROXY_UID),
        )?;
        std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(0o700))?;
        let mount = |arg: &str| {
            arg.replace(TOKEN_DIR, &pod_dir.display().to_string())
                .replace(OPERATOR_CA_DIR, &ca_dir.display().to_string())
                .replace(RUN_DIR, &run_dir.display().to_string())
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
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

/// Where in a pod's directory the sidecar's `braid-run` emptyDir lives.
pub const RUN_VOLUME_DIR: &str = "braid-run";

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

fn write_atomically(path: &Path, text: &str) -> Result<(), HarnessError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
    std::fs::rename(tmp, path)?;
    Ok(())
}
