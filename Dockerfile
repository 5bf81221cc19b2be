# syntax=docker/dockerfile:1
#
# Gangway container image: the release binary on distroless, as user 65532.
#
#   docker build -t gangway:dev .
#   docker run --rm gangway:dev --help
#
# NOTE: no image has been built from this file yet, because the machine it was
# written on runs no Docker engine. The chart tests check it with hadolint and
# parse it, but only a real `docker build` proves it.

# Debian bookworm on both stages, so the binary links against the glibc
# version that distroless cc-debian12 ships.
ARG RUST_VERSION=1.95.0

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# TODO: the image's binary is a plain release build. bench/pgo-build.sh makes a
# profile-guided one, with 16 % less user-space CPU per HTTP/1.1 request
# (docs/benchmarks.md), but its training load needs nginx and oha in the build
# stage.
# The cache mounts keep the crate registry and compiled dependencies between
# builds. target/ lives in a cache mount, so the binary is copied out of it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin gangway \
    && install -D --mode=0755 target/release/gangway /out/gangway

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/gangway /usr/local/bin/gangway
# 65532 is the "nonroot" user of distroless, and the chart's securityContext uses the same IDs.
USER 65532:65532
# Proxy HTTP, proxy HTTPS, and the admin listener (/healthz, /readyz, /metrics).
EXPOSE 8080 8443 9180
ENTRYPOINT ["/usr/local/bin/gangway"]
CMD ["--help"]
