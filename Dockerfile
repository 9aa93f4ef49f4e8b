# syntax=docker/dockerfile:1.7
# One image with every parley binary: parley-user, parley-chat, parley-mail
# and parley-operator. Dependency layers are cached with cargo-chef, so a
# source change rebuilds only parley's own crates.
#
#   docker build --build-arg VERSION=$(git describe --always) \
#     --build-arg REVISION=$(git rev-parse HEAD) -t parley:dev .
#
# The runtime stage is distroless (glibc, CA certificates, no shell), runs as
# a non-root user and needs no writable root filesystem.

ARG RUST_VERSION=1.95
ARG VERSION=dev
ARG REVISION=unknown

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

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
ARG VERSION
ARG REVISION
LABEL org.opencontainers.image.title="parley" \
      org.opencontainers.image.description="Kubernetes-native chat backend: user, chat and mail services and the parley operator" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/parley-chat/parley" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /src/target/release/parley-user /src/target/release/parley-chat /src/target/release/parley-mail /src/target/release/parley-operator /usr/local/bin/
ENV PARLEY_HTTP_ADDR=0.0.0.0:8080
EXPOSE 8080
USER 65532:65532
# The operator's Deployment and the ChatCluster's pods each name their binary.
ENTRYPOINT ["/usr/local/bin/parley-chat"]
