# syntax=docker/dockerfile:1
# Build: protos compile with protox (no protoc); rustls uses aws-lc-rs, which needs a C toolchain.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY src src
RUN cargo build --release --locked --bin secret-rotator

# Runtime: only the binary and CA roots (Auth0 and Vault certificates are verified).
FROM debian:bookworm-slim
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin rotator
COPY --from=build /src/target/release/secret-rotator /usr/local/bin/secret-rotator
USER 10001:10001
EXPOSE 50051
ENTRYPOINT ["/usr/local/bin/secret-rotator"]
CMD ["serve"]
