//! What the demo and the e2e scenarios ask of a running mesh: who served a batch of
//! requests, a steady request loop and its failures, a metric's total, a status field.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{HarnessError, Pod};

/// `count` requests from `pod` to `target` (e.g. `payments:80`) at `path` with
/// `headers` (`name: value`); the tally lines (`<n> <status> <body>`, most frequent
/// first).
pub fn tally(
    pod: &Pod,
    target: &str,
    count: usize,
    path: &str,
    headers: &[&str],
) -> Result<String, HarnessError> {
    let count = count.to_string();
    let mut args = vec!["tally", target, "--count", &count, "--path", path];
    for h in headers {
        args.extend(["--header", h]);
    }
    pod.app(&args)
}

/// How many of a tally's requests got `answer` (`<status> <body>`).
pub fn tallied(tally: &str, answer: &str) -> usize {
    tally
        .lines()
        .find_map(|l| {
            let (n, rest) = l.split_once(' ')?;
            (rest == answer).then(|| n.parse().ok())?
        })
        .unwrap_or(0)
}

/// How many of a tally's requests got an answer other than 200 (or none).
pub fn not_ok(tally: &str) -> usize {
    tally
        .lines()
        .filter(|l| !l.contains(" 200 "))
        .filter_map(|l| l.split(' ').next()?.parse::<usize>().ok())
        .sum()
}

/// An EncryptionPolicy status's rollout: its `phase` and `currentPercent` (empty when
/// not written yet).
pub fn rollout_progress(status: &str) -> (String, String) {
    (
        status_field(status, "phase").unwrap_or_default(),
        status_field(status, "currentPercent").unwrap_or_default(),
    )
}

/// The sum of the Prometheus samples in `metrics` whose line contains `needle`.
pub fn metric_sum(metrics: &str, needle: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains(needle))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The value of `field:` in a YAML status as the operator writes it.
pub fn status_field(status: &str, field: &str) -> Option<String> {
    status.lines().find_map(|l| {
        l.trim()
            .strip_prefix(&format!("{field}: "))
            .map(|v| v.trim_matches('\'').to_owned())
    })
}

/// Polls `check` every 100 ms until it holds, for at most `secs` seconds.
pub fn wait_until(
    what: &str,
    secs: u64,
    mut check: impl FnMut() -> bool,
) -> Result<(), HarnessError> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        if Instant::now() >= deadline {
            return Err(HarnessError::Timeout(what.to_owned()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// The directory mode's healing command for the pods under `pods` (the mesh's pod
/// directories): it appends `<action> <namespace>/<pod> <pod IP> <endpoint>
/// <SelfHealing>` to the returned log and stops the pod's app (whose PID the caller
/// wrote to `<pod dir>/app.pid`), which the caller, as a restart policy would, starts
/// again. Returns (the command, its log).
pub fn healing_command(pods: &Path) -> Result<(PathBuf, PathBuf), HarnessError> {
    let log = pods.join("healing.log");
    let script = pods.join("heal.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$BRAID_ACTION $BRAID_POD_NAMESPACE/$BRAID_POD_NAME $BRAID_POD_IP $BRAID_ENDPOINT $BRAID_SELF_HEALING\" >> {}\nkill -TERM \"$(cat {}/$BRAID_POD_NAME/app.pid)\"\n",
            log.display(),
            pods.display()
        ),
    )?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    Ok((script, log))
}

/// A request loop from a pod to a target, one request after another, until stopped.
pub struct Load {
    stop: PathBuf,
    label: String,
}

/// What a request loop did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadSummary {
    /// Requests answered 2xx.
    pub ok: u64,
    /// Requests that failed (an error status or no answer).
    pub failed: u64,
}

impl Load {
    /// Starts a loop from `pod` to `target` under `label`.
    pub fn start(pod: &mut Pod, label: &str, target: &str) -> Result<Self, HarnessError> {
        let stop = pod.dir().join(format!("stop-{label}"));
        let _ = std::fs::remove_file(&stop);
        let stop_arg = stop.display().to_string();
        pod.spawn_app(label, &["load", target, "--stop-file", &stop_arg])?;
        std::thread::sleep(Duration::from_millis(500));
        Ok(Self {
            stop,
            label: label.to_owned(),
        })
    }

    /// Stops the loop and says what it did.
    pub fn stop(self, pod: &mut Pod) -> Result<LoadSummary, HarnessError> {
        std::fs::write(&self.stop, "")?;
        if !pod.wait_exit(&self.label, Duration::from_secs(10))? {
            return Err(HarnessError::Timeout(format!(
                "the request loop {} to stop",
                self.label
            )));
        }
        let summary = pod.log(&self.label);
        let field = |name: &str| {
            summary
                .split_whitespace()
                .find_map(|f| f.strip_prefix(name)?.parse::<u64>().ok())
        };
        match (field("ok="), field("failed=")) {
            (Some(ok), Some(failed)) => Ok(LoadSummary { ok, failed }),
            _ => Err(HarnessError::Command {
                command: format!("load ({})", self.label),
                message: format!("no summary in its output: {summary:?}"),
            }),
        }
    }
}

/// The TLS `mode` and `rolloutPercent` `client`'s proxy holds for `server`'s endpoint of
/// `service`; `None` for plaintext.
pub fn endpoint_tls(
    client: &Pod,
    service: &str,
    server: &Pod,
) -> Result<Option<(String, u64)>, HarnessError> {
    let dump = client.config_dump()?;
    let services = dump["services"].as_array().cloned().unwrap_or_default();
    let endpoint = services
        .iter()
        .filter(|s| s["name"] == service)
        .flat_map(|s| s["groups"].as_array().cloned().unwrap_or_default())
        .flat_map(|g| g["endpoints"].as_array().cloned().unwrap_or_default())
        .find(|e| e["address"] == server.ip.to_string());
    Ok(endpoint.and_then(|e| {
        let tls = e.get("tls")?;
        Some((
            tls["mode"].as_str().unwrap_or_default().to_owned(),
            tls["rolloutPercent"].as_u64().unwrap_or_default(),
        ))
    }))
}

/// The inbound TLS mode in `pod`'s proxy (`Disabled` when absent).
pub fn inbound_tls(pod: &Pod) -> Result<String, HarnessError> {
    let dump = pod.config_dump()?;
    Ok(dump["inbound"]["tls"]["mode"]
        .as_str()
        .unwrap_or("Disabled")
        .to_owned())
}

/// The mode (`Audit`, `Enforce`) `pod`'s proxy applies for the AccessPolicy `policy`
/// (`namespace/name`); empty when it does not hold it or cannot be asked.
pub fn access_mode(pod: &Pod, policy: &str) -> String {
    pod.config_dump()
        .ok()
        .and_then(|dump| {
            dump["inbound"]["accessPolicies"]
                .as_array()?
                .iter()
                .find(|p| p["name"] == policy)?["mode"]
                .as_str()
                .map(str::to_owned)
        })
        .unwrap_or_default()
}
