//! The proxy's volumes: its projected ServiceAccount token (audience `braid`) and the
//! certificate it trusts the operator with.

use k8s_openapi::api::core::v1::{
    ConfigMapProjection, ProjectedVolumeSource, ServiceAccountTokenProjection, Volume, VolumeMount,
    VolumeProjection,
};

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
    ]
}

/// The proxy's mounts of [`volumes`], read-only.
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
    ]
}
