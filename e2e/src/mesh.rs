//! A mesh of pods (network namespaces) on one bridge.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use braid_api::config::ProxyConfig;

use crate::HarnessError;
use crate::netns::{PREFIX, delete, ip, prerequisites, run, sweep};
use crate::operator::Operator;

static MESHES: AtomicU32 = AtomicU32::new(0);

/// The UID and GID the sidecar runs as, as the injector sets it.
pub const PROXY_UID: u32 = 1337;

/// Flags of the init step, as the injector writes them into `braid-init`.
#[derive(Clone, Debug, Default)]
pub struct ProxyFlags {
    /// `--exclude-inbound-ports`.
    pub exclude_inbound_ports: Vec<u16>,
    /// `--exclude-outbound-ports`.
    pub exclude_outbound_ports: Vec<u16>,
}

impl ProxyFlags {
    /// The `braid-proxy iptables` arguments: exactly what the injector writes into
    /// `braid-init` for a pod annotated with these exclusions.
    pub fn iptables_args(&self) -> Vec<String> {
        let overrides = braid_injector::annotations::Overrides {
            exclude_inbound_ports: self.exclude_inbound_ports.clone(),
            exclude_outbound_ports: self.exclude_outbound_ports.clone(),
            ..Default::default()
        };
        let settings = braid_injector::settings::Settings {
            proxy_uid: i64::from(PROXY_UID),
            ..Default::default()
        };
        braid_injector::inject::iptables_args(&settings, &overrides)
    }
}

/// A mesh: a hub namespace holding a bridge, and pods attached to it.
pub struct Mesh {
    id: String,
    hub: String,
    subnet: u8,
    next_host: u8,
    dir: tempfile::TempDir,
    pods: Vec<String>,
    pod_dirs: Vec<(String, PathBuf)>,
    bin_dir: PathBuf,
    operators: Vec<Operator>,
}

/// A pod: a network namespace with an address on the mesh's bridge.
pub struct Pod {
    /// Its name in the mesh.
    pub name: String,
    /// Its namespace.
    pub ns: String,
    /// Its IPv4 address.
    pub ip: Ipv4Addr,
    /// Its IPv6 address.
    pub ip6: Ipv6Addr,
    dir: PathBuf,
    bin_dir: PathBuf,
    children: Vec<(String, Child)>,
}

impl Mesh {
    /// Makes an empty mesh after checking prerequisites and sweeping leftovers.
    pub fn new() -> Result<Self, HarnessError> {
        prerequisites()?;
        sweep();
        let n = MESHES.fetch_add(1, Ordering::Relaxed);
        let id = format!("{PREFIX}{}-{n}", std::process::id());
        let hub = format!("{id}-hub");
        ip(&["netns", "add", &hub])?;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        let dir = tempfile::Builder::new().prefix("braid-e2e").tempdir()?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        Ok(Self {
            id,
            hub,
            subnet: 10 + (n % 200) as u8,
            next_host: 1,
            dir,
            pods: Vec::new(),
            pod_dirs: Vec::new(),
            bin_dir: bin_dir()?,
            operators: Vec::new(),
        })
    }

    /// Adds a pod named `name` (loopback up, `eth0` on the bridge, a default route).
    pub fn pod(&mut self, name: &str) -> Result<Pod, HarnessError> {
        let host = self.next_host;
        self.next_host += 1;
        let ns = format!("{}-{name}", self.id);
        let ip_addr = Ipv4Addr::new(10, 77, self.subnet, host);
        let hub_if = format!("v{}", self.pods.len());
        ip(&["netns", "add", &ns])?;
        self.pods.push(ns.clone());
        ip(&[
            "-n", &self.hub, "link", "add", &hub_if, "type", "veth", "peer", "name", "eth0",
            "netns", &ns,
        ])?;
        ip(&[
            "-n", &self.hub, "link", "set", &hub_if, "master", "br0", "up",
        ])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{ip_addr}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &ns, "route", "add", "default", "dev", "eth0"])?;
        let ip6 = Ipv6Addr::new(
            0xfd77,
            0,
            0,
            u16::from(self.subnet),
            0,
            0,
            0,
            u16::from(host),
        );
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{ip6}/64"),
            "dev",
            "eth0",
            "nodad",
        ])?;
        ip(&["-n", &ns, "-6", "route", "add", "default", "dev", "eth0"])?;
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        self.pod_dirs.push((name.to_owned(), dir.clone()));
        Ok(Pod {
            name: name.to_owned(),
            ns,
            ip: ip_addr,
            ip6,
            dir,
            bin_dir: self.bin_dir.clone(),
            children: Vec::new(),
        })
    }

    /// Starts the operator on `registry` (the directory source's `registry.yaml`; each
    /// pod's service account must be its name, in namespace [`NAMESPACE`]), with a
    /// bootstrap token for every pod made so far.
    pub fn start_operator(&mut self, registry: &str) -> Result<&Operator, HarnessError> {
        self.start_operator_with(registry, &[])
    }

    /// [`Self::start_operator`] with `extra` flags for `braid-operator`.
    pub fn start_operator_with(
        &mut self,
        registry: &str,
        extra: &[&str],
    ) -> Result<&Operator, HarnessError> {
        let addr = self.operator_addr();
        let op = Operator::start(
            &self.hub,
            addr,
            self.dir.path(),
            &self.bin_dir,
            &self.pod_dirs,
            registry,
            extra,
        )?;
        self.operators = vec![op];
        Ok(&self.operators[0])
    }

    fn operator_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, 254)
    }

    /// Starts `replicas` operators (at least one) on one directory, as the shipped
    /// install runs two in a cluster: they elect a leader, and every one serves config.
    pub fn start_operators(
        &mut self,
        registry: &str,
        replicas: u16,
        extra: &[&str],
    ) -> Result<&mut [Operator], HarnessError> {
        self.start_operator_with(registry, extra)?;
        for index in 1..replicas {
            let op = Operator::replica(
                &self.hub,
                self.operator_addr(),
                self.dir.path(),
                &self.bin_dir,
                index,
                extra,
            )?;
            self.operators.push(op);
        }
        Ok(&mut self.operators)
    }

    /// The (first) operator, once started.
    pub fn operator(&self) -> Option<&Operator> {
        self.operators.first()
    }

    /// Every operator replica started.
    pub fn operators(&mut self) -> &mut [Operator] {
        &mut self.operators
    }

    /// Runs the e2e app in the hub namespace — where a node's kubelet would stand,
    /// outside every pod — to completion and returns its standard output.
    pub fn hub_app(&self, args: &[&str]) -> Result<String, HarnessError> {
        let bin = self.bin_dir.join("braid-e2e-app").display().to_string();
        let mut full = vec!["netns", "exec", &self.hub, &bin];
        full.extend(args);
        Ok(String::from_utf8_lossy(&ip(&full)?.stdout)
            .trim()
            .to_owned())
    }

    /// Runs `braidctl` in the hub namespace (beside the operator replicas, where a
    /// person would stand) to completion and returns its standard output; a non-zero
    /// exit is an error with its standard error.
    pub fn braidctl(&self, args: &[&str]) -> Result<String, HarnessError> {
        let bin = self.bin_dir.join("braidctl").display().to_string();
        let mut full = vec!["netns", "exec", &self.hub, &bin];
        full.extend(args);
        Ok(String::from_utf8_lossy(&ip(&full)?.stdout).into_owned())
    }

    /// Writes `/etc/netns/<pod>/hosts` for every pod: `localhost` plus `names`.
    pub fn set_hosts(&self, names: &[(&str, Ipv4Addr)]) -> Result<(), HarnessError> {
        let mut text = String::from("127.0.0.1 localhost\n");
        for (name, ip) in names {
            text.push_str(&format!("{ip} {name}\n"));
        }
        for ns in &self.pods {
            let dir = format!("/etc/netns/{ns}");
            std::fs::create_dir_all(&dir)?;
            std::fs::write(format!("{dir}/hosts"), &text)?;
        }
        Ok(())
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.operators.clear();
        for ns in &self.pods {
            delete(ns);
        }
        delete(&self.hub);
    }
}

/// Where `braid-proxy` and `braid-e2e-app` are: `BRAID_BIN_DIR`, else next to the test
/// binary's `deps/` directory (cargo's target dir).
fn bin_dir() -> Result<PathBuf, HarnessError> {
    if let Some(dir) = std::env::var_os("BRAID_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    for bin in ["braid-proxy", "braid-operator", "braid-e2e-app", "braidctl"] {
        if !dir.join(bin).is_file() {
            return Err(HarnessError::Missing(format!(
                "{} not built: run `cargo build -p braid-proxy -p braid-operator -p braidctl -p braid-e2e` (make e2e does)",
                dir.join(bin).display()
            )));
        }
    }
    Ok(dir)
}

impl Pod {
    fn bin(&self, name: &str) -> String {
        self.bin_dir.join(name).display().to_string()
    }

    /// Runs `args` in the pod to completion.
    pub fn exec(&self, args: &[&str]) -> Result<Output, HarnessError> {
        let mut full = vec!["netns", "exec", &self.ns];
        full.extend(args);
        ip(&full)
    }

    /// Runs `braidctl` in the pod (where its proxy's admin port is) to completion and
    /// returns its standard output; a non-zero exit is an error with its standard error.
    pub fn braidctl(&self, args: &[&str]) -> Result<String, HarnessError> {
        let bin = self.bin("braidctl");
        let mut full = vec![bin.as_str()];
        full.extend(args);
        Ok(String::from_utf8_lossy(&self.exec(&full)?.stdout).into_owned())
    }

    /// Runs the e2e app in the pod to completion and returns its standard output.
    pub fn app(&self, args: &[&str]) -> Result<String, HarnessError> {
        let bin = self.bin("braid-e2e-app");
        let mut full = vec![bin.as_str()];
        full.extend(args);
        Ok(String::from_utf8_lossy(&self.exec(&full)?.stdout)
            .trim()
            .to_owned())
    }

    /// Starts the e2e app in the pod in the background.
    pub fn spawn_app(&mut self, label: &str, args: &[&str]) -> Result<(), HarnessError> {
        let bin = self.bin("braid-e2e-app");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, &bin]).args(args);
        self.spawn(label, cmd)
    }

    /// Starts `args` (any program, e.g. `tcpdump`) in the pod in the background.
    pub fn spawn_cmd(&mut self, label: &str, args: &[&str]) -> Result<(), HarnessError> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns]).args(args);
        self.spawn(label, cmd)
    }

    fn spawn(&mut self, label: &str, mut cmd: Command) -> Result<(), HarnessError> {
        let log = std::fs::File::create(self.dir.join(format!("{label}.log")))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| HarnessError::Command {
                command: format!("{cmd:?}"),
                message: e.to_string(),
            })?;
        self.children.push((label.to_owned(), child));
        Ok(())
    }

    /// The init step: the real `braid-proxy iptables` command with the injector's flags.
    pub fn capture(&self, flags: &ProxyFlags) -> Result<String, HarnessError> {
        self.iptables(flags, &[])
    }

    /// `braid-proxy iptables` with the injector's flags plus `extra` (`--cleanup`, `--dry-run`).
    pub fn iptables(&self, flags: &ProxyFlags, extra: &[&str]) -> Result<String, HarnessError> {
        let bin = self.bin("braid-proxy");
        let mut args = flags.iptables_args();
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let mut full: Vec<&str> = vec![bin.as_str()];
        full.extend(args.iter().map(String::as_str));
        let out = self.exec(&full)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Writes the sidecar's config file (it picks changes up by itself).
    pub fn write_config(&self, config: &ProxyConfig) -> Result<(), HarnessError> {
        let text = serde_json::to_string_pretty(config).map_err(|e| HarnessError::Command {
            command: "serialise config".into(),
            message: e.to_string(),
        })?;
        let path = self.dir.join("config.json");
        let tmp = self.dir.join("config.json.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
        std::fs::rename(tmp, path)?;
        Ok(())
    }

    /// Starts the sidecar as UID/GID 1337 with `config` and waits until it is ready.
    pub fn start_sidecar(&mut self, config: &ProxyConfig) -> Result<(), HarnessError> {
        self.write_config(config)?;
        let args = vec![
            "run".to_owned(),
            "--config".to_owned(),
            self.dir.join("config.json").display().to_string(),
            "--config-poll-ms".into(),
            "100".into(),
        ];
        self.start_sidecar_with(&args, &[])
    }

    /// Starts the sidecar as UID/GID 1337 streaming its config from `operator`, with
    /// the arguments and environment the injector writes into the pod (its volumes
    /// mapped to files of this pod, its downward-API fields to this pod's values), and
    /// waits until it is ready (it has applied a first config).
    pub fn start_sidecar_streaming(&mut self, operator: &Operator) -> Result<(), HarnessError> {
        let (args, env) = operator.sidecar_command(&self.name, self.ip, &self.dir)?;
        self.start_sidecar_with(&args, &env)
    }

    /// [`Self::start_sidecar_streaming`] for a pod annotated with `annotations`: the
    /// sidecar gets what the injector writes for them (checked as at admission).
    pub fn start_sidecar_annotated(
        &mut self,
        operator: &Operator,
        annotations: &[(&str, &str)],
    ) -> Result<(), HarnessError> {
        let map = annotations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let overrides = braid_injector::annotations::Overrides::parse(&map).map_err(|errors| {
            HarnessError::Missing(format!("the injector refuses {annotations:?}: {errors:?}"))
        })?;
        let (args, mut env) =
            operator.sidecar_command_for(&self.name, self.ip, &self.dir, &overrides)?;
        // The workload the injector names for a pod of no controller: the pod's name.
        let meta = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(self.name.clone()),
            ..Default::default()
        };
        if let Some(workload) = braid_injector::inject::workload::name(&meta) {
            env.push((
                braid_injector::inject::workload::WORKLOAD_ENV.to_owned(),
                workload,
            ));
        }
        self.start_sidecar_with(&args, &env)
    }

    /// [`Self::start_sidecar_streaming`] with `extra_env` added to the sidecar's
    /// environment (e.g. `BRAID_APP_PROBES` from an injected pod's proxy container).
    pub fn start_sidecar_streaming_with_env(
        &mut self,
        operator: &Operator,
        extra_env: &[(String, String)],
    ) -> Result<(), HarnessError> {
        let (args, mut env) = operator.sidecar_command(&self.name, self.ip, &self.dir)?;
        env.extend_from_slice(extra_env);
        self.start_sidecar_with(&args, &env)
    }

    /// `ip netns exec <pod> setpriv …1337… <bin>`: a command in the proxy's container.
    fn as_proxy(&self, bin: &str) -> Command {
        let uid = format!("--reuid={PROXY_UID}");
        let gid = format!("--regid={PROXY_UID}");
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &self.ns,
            "setpriv",
            &uid,
            &gid,
            "--clear-groups",
            "--",
        ])
        .arg(self.bin(bin));
        cmd
    }

    /// Starts, as `label`, the proxy container's `preStop` hook exactly as the injector
    /// writes it for clusters without native sidecars, for an app declaring `app_ports`.
    pub fn spawn_pre_stop_hook(
        &mut self,
        label: &str,
        app_ports: &[u16],
    ) -> Result<(), HarnessError> {
        let settings = braid_injector::settings::Settings {
            native_sidecars: false,
            ..Default::default()
        };
        let container =
            braid_injector::inject::proxy_container(&settings, &Default::default(), app_ports);
        let command = container
            .lifecycle
            .and_then(|l| l.pre_stop)
            .and_then(|h| h.exec)
            .and_then(|e| e.command)
            .ok_or_else(|| {
                HarnessError::Missing("the injector wrote no preStop exec hook".into())
            })?;
        let (program, args) = command
            .split_first()
            .ok_or_else(|| HarnessError::Missing("the preStop hook's command is empty".into()))?;
        let mut cmd = self.as_proxy(program);
        cmd.args(args);
        self.spawn(label, cmd)
    }

    /// Whether the process started as `label` is still running.
    pub fn is_running(&mut self, label: &str) -> Result<bool, HarnessError> {
        let (_, child) = self
            .children
            .iter_mut()
            .find(|(l, _)| l == label)
            .ok_or_else(|| HarnessError::Missing(format!("no process {label}")))?;
        Ok(child.try_wait()?.is_none())
    }

    /// Replaces the proxy under the sidecar's supervisor with `binary` as an upgrade in
    /// the pod would: `braid-proxy upgrade` as the proxy's user, with the binary's
    /// SHA-256 (`None`: its own). Returns what the command printed; an error when it
    /// failed (its output says why).
    pub fn upgrade_sidecar(
        &self,
        binary: &Path,
        sha256: Option<&str>,
    ) -> Result<String, HarnessError> {
        let digest = match sha256 {
            Some(d) => d.to_owned(),
            None => sha256_of(binary)?,
        };
        let run_dir = self.dir.join(crate::operator::RUN_VOLUME_DIR);
        let mut cmd = self.as_proxy("braid-proxy");
        cmd.arg("upgrade")
            .arg("--dir")
            .arg(&run_dir)
            .arg("--binary")
            .arg(binary)
            .args(["--sha256", &digest]);
        let out = cmd.output().map_err(|e| HarnessError::Command {
            command: format!("{cmd:?}"),
            message: e.to_string(),
        })?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            return Err(HarnessError::Command {
                command: "braid-proxy upgrade".into(),
                message: text,
            });
        }
        Ok(text)
    }

    /// A copy of the proxy binary in the pod's directory, readable by the proxy's user:
    /// a release to upgrade to.
    pub fn proxy_release(&self, name: &str) -> Result<PathBuf, HarnessError> {
        let path = self.dir.join(name);
        std::fs::copy(self.bin("braid-proxy"), &path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        Ok(path)
    }

    /// The process id of the proxy the sidecar's supervisor runs now.
    pub fn proxy_pid(&self) -> Option<u32> {
        let supervisor = self.pid("sidecar")?;
        std::fs::read_to_string(format!("/proc/{supervisor}/task/{supervisor}/children"))
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    fn start_sidecar_with(
        &mut self,
        args: &[String],
        env: &[(String, String)],
    ) -> Result<(), HarnessError> {
        let mut cmd = self.as_proxy("braid-proxy");
        cmd.args(args)
            .args(["--drain-timeout-secs", "10"])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("RUST_BACKTRACE", "0");
        self.spawn("sidecar", cmd)?;
        let bin = self.bin("braid-proxy");
        self.exec(&[&bin, "wait-ready", "--timeout-secs", "10"])
            .map_err(|e| {
                HarnessError::Timeout(format!(
                    "sidecar of {} not ready: {e}\n{}",
                    self.name,
                    self.log("sidecar")
                ))
            })?;
        Ok(())
    }

    /// The sidecar's `/metrics`.
    pub fn metrics(&self) -> Result<String, HarnessError> {
        let out = self.app(&[
            "get",
            "127.0.0.1:15000",
            "--path",
            "/metrics",
            "--host",
            "admin",
        ])?;
        Ok(out)
    }

    /// The config in force in the sidecar (its `/config_dump`).
    pub fn config_dump(&self) -> Result<serde_json::Value, HarnessError> {
        let out = self.app(&[
            "get",
            "127.0.0.1:15000",
            "--path",
            "/config_dump",
            "--host",
            "admin",
        ])?;
        let body = out.split_once(' ').map(|(_, b)| b).unwrap_or_default();
        serde_json::from_str(body).map_err(|e| HarnessError::Command {
            command: "config_dump".into(),
            message: format!("{e}: {out}"),
        })
    }

    /// The version of the config in force in the sidecar (from `/config_dump`).
    pub fn config_version(&self) -> Result<String, HarnessError> {
        let dump = self.config_dump()?;
        Ok(dump["version"].as_str().unwrap_or_default().to_owned())
    }

    /// The process ID of what was started as `label`.
    pub fn pid(&self, label: &str) -> Option<u32> {
        self.children
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, c)| c.id())
    }

    /// Sends SIGTERM to the process started as `label`.
    pub fn terminate(&self, label: &str) -> Result<(), HarnessError> {
        let (_, child) = self
            .children
            .iter()
            .find(|(l, _)| l == label)
            .ok_or_else(|| HarnessError::Missing(format!("no process {label} in {}", self.name)))?;
        run("kill", &["-TERM", &child.id().to_string()])?;
        Ok(())
    }

    /// Waits for the process started as `label` to exit; true when it exited successfully.
    pub fn wait_exit(&mut self, label: &str, timeout: Duration) -> Result<bool, HarnessError> {
        let deadline = Instant::now() + timeout;
        let (_, child) = self
            .children
            .iter_mut()
            .find(|(l, _)| l == label)
            .ok_or_else(|| HarnessError::Missing(format!("no process {label}")))?;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                return Ok(status.success());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(HarnessError::Timeout(format!("{label} still running")))
    }

    /// What the process started as `label` printed.
    pub fn log(&self, label: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{label}.log"))).unwrap_or_default()
    }

    /// The pod's own directory (logs, config, token), readable by the sidecar.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The address of `port` on this pod.
    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.ip.into(), port)
    }

    /// Waits until something listens on `port` in the pod.
    pub fn wait_listening(&self, port: u16) -> Result<(), HarnessError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let out = self.exec(&["ss", "-Hltn", &format!("sport = :{port}")])?;
            if !out.stdout.is_empty() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(HarnessError::Timeout(format!(
            "nothing listens on {}:{port}",
            self.name
        )))
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The SHA-256 of `path`, as `sha256sum` prints it.
fn sha256_of(path: &Path) -> Result<String, HarnessError> {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .map_err(|e| HarnessError::Command {
            command: "sha256sum".into(),
            message: e.to_string(),
        })?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .map(str::to_owned)
        .ok_or_else(|| HarnessError::Missing(format!("no digest of {}", path.display())))
}
