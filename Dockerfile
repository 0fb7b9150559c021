# syntax=docker/dockerfile:1
# Build: protos compile with protox (no protoc); rustls uses aws-lc-rs, which needs a C toolchain.
# Base images are pinned by digest (the multi-platform index each tag resolved to on
# 2026-09-27); see the README's Development section for how they were obtained and refreshed.
FROM rust:1.95-bookworm@sha256:6258907abe69656e41cd992e0b705cdcfabcbbe3db374f92ed2d47121282d4a1 AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY src src
# .git is not in the build context: secret_rotator_build_info's commit comes from
# `docker build --build-arg GIT_COMMIT=$(git rev-parse --short=12 HEAD)`.
ARG GIT_COMMIT=unknown
# BuildKit cache mounts keep the registry and build output between builds; the binary is
# copied out of the cached target directory, which is not part of the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin secret-rotator \
    && cp target/release/secret-rotator /secret-rotator

# Runtime: only the binary and CA roots (Auth0 and Vault certificates are verified).
FROM debian:bookworm-slim@sha256:3783cc01769c7b2b1b83a5c5ad96c815348e28ed7da68e2e3687004faa906251
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 rotator \
    && useradd --system --uid 10001 --gid rotator --no-create-home --shell /usr/sbin/nologin rotator
COPY --from=build /secret-rotator /usr/local/bin/secret-rotator
USER 10001:10001
EXPOSE 50051
ENTRYPOINT ["/usr/local/bin/secret-rotator"]
CMD ["serve"]
