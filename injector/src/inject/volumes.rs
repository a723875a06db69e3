//! The proxy's volumes: its projected ServiceAccount token (audience `braid`), the
//! certificate it trusts the operator with, and the directory its supervisor keeps the
//! handover socket and upgraded binaries in.

use k8s_openapi::api::core::v1::{
    ConfigMapProjection, EmptyDirVolumeSource, ProjectedVolumeSource,
    ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// The token volume's name.
pub const TOKEN_VOLUME: &str = "braid-token";
/// Where the token is mounted.
pub const TOKEN_DIR: &str = "/var/run/secrets/braid.dev";
/// The operator CA volume's name.
pub const OPERATOR_CA_VOLUME: &str = "braid-operator-ca";
/// Where the operator's CA is mounted.
pub const OPERATOR_CA_DIR: &str = "/var/run/braid.dev/operator-ca";
/// The ConfigMap (in every namespace, kept by the operator) holding `ca.crt`.
pub const OPERATOR_CA_CONFIGMAP: &str = "braid-operator-ca";
/// The supervisor's volume: an emptyDir only the proxy's container mounts.
pub const RUN_VOLUME: &str = "braid-run";
/// Where it is mounted (`braid-proxy supervise --dir`).
pub const RUN_DIR: &str = "/var/run/braid.dev/run";
/// Room for two proxy binaries (the running one and its successor) and the sockets.
const RUN_SIZE: &str = "128Mi";

/// The volumes the proxy needs.
pub fn volumes() -> Vec<Volume> {
    vec![
        Volume {
            name: TOKEN_VOLUME.into(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: Some(braid_api::control::TOKEN_AUDIENCE.into()),
                        // kubelet rotates it at 80% of this; the proxy re-reads it on
                        // every connect.
                        expiration_seconds: Some(3600),
                        path: "token".into(),
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: OPERATOR_CA_VOLUME.into(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: OPERATOR_CA_CONFIGMAP.into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: RUN_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(Quantity(RUN_SIZE.into())),
                ..Default::default()
            }),
            ..Default::default()
        },
    ]
}

/// The proxy's mounts of [`volumes`]: read-only but for its supervisor's directory.
pub fn mounts() -> Vec<VolumeMount> {
    vec![
        VolumeMount {
            name: TOKEN_VOLUME.into(),
            mount_path: TOKEN_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        },
        VolumeMount {
            name: OPERATOR_CA_VOLUME.into(),
            mount_path: OPERATOR_CA_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        },
        VolumeMount {
            name: RUN_VOLUME.into(),
            mount_path: RUN_DIR.into(),
            ..Default::default()
        },
    ]
}
