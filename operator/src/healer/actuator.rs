//! Who carries out a healing action: the Kubernetes API (see `kube`), or in directory
//! mode a command the administrator configures ([`CommandActuator`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::reports::EndpointRef;
use crate::registry::{ObjectKey, Workload};

/// How long a healing command may run.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// What to do to a pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    /// Restart it (evict it in Kubernetes).
    Restart,
    /// Keep it out of every proxy's config.
    Quarantine,
    /// Lift a quarantine the operator put on it.
    Readmit,
}

impl Act {
    /// The action's name, as status, events and the command's `BRAID_ACTION` spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Restart => "RestartPod",
            Self::Quarantine => "RemoveFromService",
            Self::Readmit => "Readmit",
        }
    }
}

/// One action on one pod.
#[derive(Clone, Debug)]
pub struct Request {
    /// What to do.
    pub act: Act,
    /// The SelfHealing asking for it.
    pub healing: ObjectKey,
    /// The pod.
    pub pod: Arc<Workload>,
    /// The reported endpoint that led to it (none for a readmission).
    pub endpoint: Option<EndpointRef>,
}

/// Why an action was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum ActError {
    /// Refused for now (a PodDisruptionBudget allows no disruption): try again later.
    #[error("{0}")]
    Blocked(String),
    /// The pod no longer exists: nothing to do.
    #[error("the pod no longer exists")]
    Gone,
    /// It failed.
    #[error("{0}")]
    Failed(String),
}

/// Carries out healing actions.
pub trait Actuator: Send + Sync + 'static {
    /// Does what `request` says.
    fn act<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Result<(), ActError>>;
}

/// Directory mode: runs the administrator's command (e.g. a service manager restart)
/// with the pod's details in its environment: `BRAID_ACTION` (`RestartPod`,
/// `RemoveFromService` or `Readmit`), `BRAID_POD_NAME`, `BRAID_POD_NAMESPACE`,
/// `BRAID_POD_IP`, `BRAID_ENDPOINT` (`ip:port`, empty for `Readmit`), `BRAID_TARGET` (the
/// service port, `name.namespace:port`) and `BRAID_SELF_HEALING` (`namespace/name`).
/// Exit status 0 means done.
pub struct CommandActuator {
    program: Option<PathBuf>,
}

impl CommandActuator {
    /// Runs `program`; without one every action fails, saying which flag to set.
    pub fn new(program: Option<PathBuf>) -> Self {
        Self { program }
    }
}

impl Actuator for CommandActuator {
    fn act<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Result<(), ActError>> {
        Box::pin(async move {
            let program = self.program.as_ref().ok_or_else(|| {
                ActError::Failed(
                    "no --healing-command: in directory mode healing actions run that command"
                        .into(),
                )
            })?;
            let pod = &request.pod;
            let ip = pod.ips.first().map(ToString::to_string).unwrap_or_default();
            let (endpoint, target) = request
                .endpoint
                .as_ref()
                .map(|e| (e.addr.to_string(), e.target.clone()))
                .unwrap_or_default();
            let mut cmd = tokio::process::Command::new(program);
            cmd.env("BRAID_ACTION", request.act.as_str())
                .env("BRAID_POD_NAME", &pod.key.name)
                .env("BRAID_POD_NAMESPACE", &pod.key.namespace)
                .env("BRAID_POD_IP", ip)
                .env("BRAID_ENDPOINT", endpoint)
                .env("BRAID_TARGET", target)
                .env("BRAID_SELF_HEALING", request.healing.to_string())
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                // Its own process group, so a timeout ends whatever it started too.
                .process_group(0)
                .kill_on_drop(true);
            let child = cmd.spawn().map_err(|e| {
                ActError::Failed(format!(
                    "--healing-command {}: cannot run: {e}",
                    program.display()
                ))
            })?;
            let group = child.id();
            let output = match tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output()).await
            {
                Err(_) => {
                    if let Some(pgid) = group {
                        let _ = std::process::Command::new("kill")
                            .args(["-KILL", "--", &format!("-{pgid}")])
                            .status();
                    }
                    return Err(ActError::Failed(format!(
                        "--healing-command {}: still running after {}s; killed",
                        program.display(),
                        COMMAND_TIMEOUT.as_secs()
                    )));
                }
                Ok(Err(e)) => {
                    return Err(ActError::Failed(format!(
                        "--healing-command {}: {e}",
                        program.display()
                    )));
                }
                Ok(Ok(o)) => o,
            };
            if output.status.success() {
                return Ok(());
            }
            let stderr = String::from_utf8_lossy(&output.stderr);
            let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
            Err(ActError::Failed(format!(
                "--healing-command {}: {}{}",
                program.display(),
                output.status,
                last.map(|l| format!(": {}", l.trim())).unwrap_or_default()
            )))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn request(act: Act) -> Request {
        Request {
            act,
            healing: ObjectKey::new("shop", "heal"),
            pod: Arc::new(Workload {
                key: ObjectKey::new("shop", "payments-0"),
                ips: vec!["10.0.0.5".parse().unwrap()],
                labels: Default::default(),
                service_account: "payments".into(),
                meshed: true,
                outbound_scope: Vec::new(),
            }),
            endpoint: Some(EndpointRef {
                target: "payments.shop:8080".into(),
                addr: "10.0.0.5:8080".parse().unwrap(),
            }),
        }
    }

    fn script(dir: &std::path::Path, body: &str) -> PathBuf {
        let path = dir.join("heal.sh");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[tokio::test]
    async fn the_command_gets_the_pod_in_its_environment() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let program = script(
            dir.path(),
            &format!(
                "echo \"$BRAID_ACTION $BRAID_POD_NAMESPACE/$BRAID_POD_NAME $BRAID_POD_IP $BRAID_ENDPOINT $BRAID_TARGET $BRAID_SELF_HEALING\" > {}",
                out.display()
            ),
        );
        CommandActuator::new(Some(program))
            .act(&request(Act::Restart))
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "RestartPod shop/payments-0 10.0.0.5 10.0.0.5:8080 payments.shop:8080 shop/heal\n"
        );
    }

    #[tokio::test]
    async fn a_failing_or_missing_command_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let program = script(dir.path(), "echo 'unit payments not found' >&2; exit 3");
        let err = CommandActuator::new(Some(program))
            .act(&request(Act::Quarantine))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("exit status: 3: unit payments not found"),
            "{err}"
        );
        let err = CommandActuator::new(None)
            .act(&request(Act::Restart))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("--healing-command"), "{err}");
    }
}
