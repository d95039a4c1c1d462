# syntax=docker/dockerfile:1.7
# Meshwork images, one multi-stage build:
#   docker build --target controlplane -t meshwork/controlplane:dev .
#   docker build --target ztunnel      -t meshwork/ztunnel:dev .
#   docker build --target waypoint     -t meshwork/waypoint:dev .
#   docker build --target meshwork     -t meshwork/meshwork:dev .   # CLI
#   docker build --target testapp      -t meshwork/testapp:dev .    # e2e test app
# (e2e/kind/build-images.sh builds them all.)

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm
ARG BPF_LINKER_VERSION=0.10.4

# --- toolchain: stable Rust, plus nightly + rust-src + bpf-linker for the BPF programs
# (what scripts/install-ebpf-toolchain.sh installs on a developer machine).
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS toolchain
ARG BPF_LINKER_VERSION
# The CNI plugin runs on the node, outside any image: it is linked statically (musl).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl
RUN rustup toolchain install nightly --profile minimal --component rust-src \
    && cargo install --locked "bpf-linker@${BPF_LINKER_VERSION}" \
    && rm -rf /usr/local/cargo/registry

# --- build the release binaries.
FROM toolchain AS builder
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
        -p meshwork-controlplane -p meshwork-ztunnel -p meshwork-waypoint \
        -p meshwork-cli -p meshwork-testapp \
    && cargo build --release --locked -p meshwork-cni --target x86_64-unknown-linux-musl \
    && mkdir -p /out \
    && cp target/x86_64-unknown-linux-musl/release/meshwork-cni /out/ \
    && cp target/release/controlplane target/release/ztunnel target/release/waypoint \
          target/release/meshwork target/release/meshwork-testapp /out/

# --- common runtime base: glibc, CA certificates, an unprivileged user.
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# Unpinned on purpose: take the release's current security updates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 65532 meshwork \
    && useradd --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin meshwork

FROM runtime AS controlplane
COPY --from=builder /out/controlplane /usr/local/bin/controlplane
USER 65532:65532
EXPOSE 15012 15014
ENTRYPOINT ["/usr/local/bin/controlplane"]

# ztunnel loads the TC programs (node mode: and sets policy routing with iproute2's `ip`
# in the node's namespace; in-pod mode: rtnetlink in each pod's namespace): it runs as root
# with the capabilities the chart grants. The same image carries the static CNI plugin,
# which the chart's cni-installer container copies to the node.
FROM runtime AS ztunnel
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends iproute2 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=builder /out/ztunnel /usr/local/bin/ztunnel
COPY --from=builder /out/meshwork-cni /usr/local/bin/meshwork-cni
EXPOSE 15001 15006 15008 15020 15021
ENTRYPOINT ["/usr/local/bin/ztunnel"]

FROM runtime AS waypoint
COPY --from=builder /out/waypoint /usr/local/bin/waypoint
USER 65532:65532
EXPOSE 15008 15021
ENTRYPOINT ["/usr/local/bin/waypoint"]

FROM runtime AS meshwork
COPY --from=builder /out/meshwork /usr/local/bin/meshwork
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/meshwork"]

FROM runtime AS testapp
COPY --from=builder /out/meshwork-testapp /usr/local/bin/meshwork-testapp
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/meshwork-testapp"]
