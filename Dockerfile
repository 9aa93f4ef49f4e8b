# syntax=docker/dockerfile:1.7
# One image with every parley binary: parley-user, parley-chat, parley-mail
# and parley-operator. Dependency layers are cached with cargo-chef, so a
# source change rebuilds only parley's own crates.
#
#   docker build --build-arg VERSION=$(git describe --always) \
#     --build-arg REVISION=$(git rev-parse HEAD) -t parley:dev .
#
# The runtime stage is Debian 12 with glibc and CA certificates only, runs as
# the non-root user 65532 and needs no writable root filesystem.
#
# Without a registry (e2e/images/build.sh, the one-node cluster) the runtime
# stage alone is built, on a base bootstrapped from Debian's archive and with
# release binaries built on the host:
#
#   buildah bud --target runtime --build-arg RUNTIME_BASE=localhost/parley-base:bookworm \
#     --build-arg BINARIES=prebuilt -f Dockerfile DIR_WITH_THE_FOUR_BINARIES

ARG RUST_VERSION=1.95
ARG VERSION=dev
ARG REVISION=unknown
# The stage (or image) the runtime starts from: runtime-base below by default.
ARG RUNTIME_BASE=runtime-base
# Where the binaries come from: the builder stage, or `prebuilt` (the four
# binaries at the root of the build context).
ARG BINARIES=builder

FROM rust:${RUST_VERSION}-slim-bookworm AS chef
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc g++ make cmake pkg-config \
 && rm -rf /var/lib/apt/lists/*
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
# parley-build: the exact command the Dockerfile test runs.
RUN cargo build --release --locked --bin parley-user --bin parley-chat --bin parley-mail --bin parley-operator

FROM scratch AS prebuilt
COPY parley-user parley-chat parley-mail parley-operator /src/target/release/

FROM ${BINARIES} AS binaries

# glibc and CA certificates (for TLS to managed stores and SMTP relays), and
# the unprivileged user 65532.
FROM debian:bookworm-slim AS runtime-base
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd -g 65532 nonroot \
 && useradd -u 65532 -g 65532 -d /home/nonroot -M -s /usr/sbin/nologin nonroot

FROM ${RUNTIME_BASE} AS runtime
ARG VERSION
ARG REVISION
LABEL org.opencontainers.image.title="parley" \
      org.opencontainers.image.description="Kubernetes-native chat backend: user, chat and mail services and the parley operator" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/parley-chat/parley" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=binaries /src/target/release/parley-user /src/target/release/parley-chat /src/target/release/parley-mail /src/target/release/parley-operator /usr/local/bin/
ENV PARLEY_HTTP_ADDR=0.0.0.0:8080
EXPOSE 8080
USER 65532:65532
# The operator's Deployment and the ChatCluster's pods each name their binary.
ENTRYPOINT ["/usr/local/bin/parley-chat"]
