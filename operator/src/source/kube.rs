//! The Kubernetes source (kube-runtime reflectors).
