# ghcr.io/braid-mesh/braid: ONE image holding braid-proxy, braid-operator,
# braid-injector and iptables. `make images` builds it.
#
# Why one image and not one per binary: braid-proxy runs in every meshed pod twice (the
# braid-init container that installs the capture rules, and the sidecar), so its image
# is pulled on every node anyway. With the operator and the injector in the same image,
# a node pulls one image once, whichever braid pod lands there, the three binaries can
# never be of different versions, and there is one tag to retag (manifests/
# kustomization.yaml's images entry; the injector injects the image it runs from). The
# cost is small: the operator and injector binaries add a few MB to a Debian slim base
# the proxy needs anyway for iptables.
#
# Who runs as whom (the pod specs set it; the image's default USER is only a fallback):
# - braid-operator, braid-injector: any unprivileged UID; the manifests use 65532, and so
#   does USER below. Not 1337: the capture rules let UID 1337's traffic out uncaptured,
#   so that UID belongs to the proxy alone. Nor root: neither needs any privilege.
# - braid-proxy (the sidecar): UID/GID 1337, set by the injector's patch (runAsUser,
#   --proxy-uid), the UID the capture rules exclude. No capabilities.
# - braid-init (`braid-proxy iptables`): root with only NET_ADMIN and NET_RAW, set by the
#   injector's patch, with a read-only root filesystem. iptables-legacy takes its lock
#   by opening /run/xtables.lock with O_CREAT, which a read-only filesystem refuses for a
#   missing file but allows for an existing one, so the image ships the file.

# The toolchain CI builds and tests Cargo.lock with (the workspace's rust-version, 1.89,
# is only the minimum).
ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM docker.io/library/rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src
# The whole workspace: cargo needs every member's manifest even to build three of them.
# Plain instructions only (no BuildKit cache mounts), so the classic builder works too.
COPY . .
# The proxy on its own: its dependencies with its own features only (a smaller sidecar), and
# the build its code layout (proxy/link/hot-symbols.txt, see proxy/build.rs) was made for.
RUN cargo build --release --locked -p braid-proxy \
 && cargo build --release --locked -p braid-operator -p braid-injector \
 && mkdir -p /out \
 && cp target/release/braid-proxy target/release/braid-operator target/release/braid-injector /out/

FROM docker.io/library/debian:${DEBIAN_RELEASE}-slim
# Debian's iptables package carries both backends (iptables-nft* and iptables-legacy*);
# braid-proxy iptables uses whichever the node uses. ca-certificates for an operator or
# injector pointed at a cluster through KUBECONFIG instead of in-cluster credentials.
# Bookworm, like the development and CI machines whose iptables the e2e suite exercises.
# Versions are not pinned: the release's security updates are wanted.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && touch /run/xtables.lock \
 && chmod 0600 /run/xtables.lock
COPY --from=build /out/ /usr/local/bin/
LABEL org.opencontainers.image.source="https://github.com/braid-mesh/braid" \
      org.opencontainers.image.description="braid service mesh: braid-proxy, braid-operator, braid-injector and iptables" \
      org.opencontainers.image.licenses="Apache-2.0"
# Non-root by default; see above for the UID each binary runs as in a cluster.
USER 65532:65532
# No entrypoint: each pod names its binary (command: [braid-operator], ...).
CMD ["braid-proxy", "--help"]
