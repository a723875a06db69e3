//! Healing actions through the Kubernetes API: eviction (so PodDisruptionBudgets hold)
//! and the quarantine labels.

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{EvictParams, Patch, PatchParams};
use kube::{Api, Client};

use super::actuator::{Act, ActError, Actuator, Request};
use super::quarantine::{QUARANTINED, QUARANTINED_BY, tag};
use crate::sink::kube::FIELD_MANAGER;

/// Acts through the API server.
pub struct KubeActuator {
    client: Client,
}

impl KubeActuator {
    /// Acts through `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

/// The JSON merge patch of the pod's labels for `act` (`None` for a restart).
pub fn label_patch(act: Act, healing: &str) -> Option<serde_json::Value> {
    let labels = match act {
        Act::Restart => return None,
        Act::Quarantine => serde_json::json!({QUARANTINED: "true", QUARANTINED_BY: tag(healing)}),
        Act::Readmit => serde_json::json!({QUARANTINED: null, QUARANTINED_BY: null}),
    };
    Some(serde_json::json!({"metadata": {"labels": labels}}))
}

fn failed(what: &str, e: kube::Error) -> ActError {
    match e {
        kube::Error::Api(s) if s.code == 404 => ActError::Gone,
        // The eviction API answers 429 while a PodDisruptionBudget allows no disruption.
        kube::Error::Api(s) if s.code == 429 => ActError::Blocked(format!(
            "{what}: refused for now ({}); a PodDisruptionBudget allows no disruption",
            s.message
        )),
        other => ActError::Failed(format!("{what}: {other}")),
    }
}

impl Actuator for KubeActuator {
    fn act<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Result<(), ActError>> {
        Box::pin(async move {
            let pod = &request.pod.key;
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
            match label_patch(request.act, &request.healing.name) {
                None => api
                    .evict(&pod.name, &EvictParams::default())
                    .await
                    .map(drop)
                    .map_err(|e| failed(&format!("evicting pod {pod}"), e)),
                Some(patch) => api
                    .patch(
                        &pod.name,
                        &PatchParams {
                            field_manager: Some(FIELD_MANAGER.into()),
                            ..Default::default()
                        },
                        &Patch::Merge(&patch),
                    )
                    .await
                    .map(drop)
                    .map_err(|e| failed(&format!("labelling pod {pod}"), e)),
            }
        })
    }
}
