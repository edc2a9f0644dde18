# syntax=docker/dockerfile:1
#
# costline: one image for every subcommand (`run`, `migrate`, `produce`, `demo`, `config`).
#
#   docker build -t costline:local .
#   docker run --rm costline:local --help
#   docker run --rm -e COSTLINE_KAFKA__BROKERS=... -e COSTLINE_CLICKHOUSE__URL=... \
#       -e COSTLINE_CLICKHOUSE_PASSWORD=... -p 127.0.0.1:9464:9464 costline:local      # a worker
#
# Needs BuildKit (the default builder of Docker Engine >= 23 and of `docker compose`): the
# build stage uses cache mounts so that a source change does not re-download crates or rebuild
# librdkafka. With the legacy Python docker-compose 1.x, export DOCKER_BUILDKIT=1 and
# COMPOSE_DOCKER_CLI_BUILD=1 before `docker-compose build`.

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ------------------------------------------------------------------------------------ build
FROM ${RUST_IMAGE} AS builder

# rdkafka (default features + `tokio`) builds the bundled librdkafka with its own
# ./configure + make, without SSL, SASL, curl or zstd; the only library it links is zlib
# (through libz-sys, found with pkg-config). Hence: a C/C++ toolchain and make
# (build-essential), pkg-config and zlib headers. No cmake (the `cmake-build` feature is off),
# no python3, libssl-dev or libsasl2-dev (their features are off too). Most of this is already
# in rust:1-bookworm; it is listed so the build does not depend on that by accident.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential pkg-config zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src

# Only what the build reads: the workspace manifests and lockfile, the crates, `schemas/`
# (migrations and the built-in price table are compiled in with include_str!) and `tests/`
# (crates/costline/Cargo.toml declares ../../tests/pipeline.rs as a test target). Scripts,
# docs and deploy files stay out, so editing them does not invalidate this layer.
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
COPY schemas ./schemas
COPY tests ./tests

# --locked: build exactly the dependency versions of Cargo.lock, or fail.
# The target directory is a cache mount (not part of the image), so the binary is copied out
# of it in the same step. `sharing=locked` serializes concurrent builds of this Dockerfile
# (docker compose builds the services that share this image in parallel).
# The release profile keeps line tables (`debug = 1` in Cargo.toml) for readable backtraces;
# the binary is deliberately not stripped.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p costline \
 && install -m 0755 target/release/costline /usr/local/bin/costline

# ---------------------------------------------------------------------------------- runtime
FROM ${RUNTIME_IMAGE}

LABEL org.opencontainers.image.title="costline" \
      org.opencontainers.image.description="LLM cost attribution: Kafka usage events -> exact rollups in ClickHouse" \
      org.opencontainers.image.licenses="Apache-2.0"

# ca-certificates: for https:// ClickHouse URLs and TLS Kafka listeners configured later.
# zlib1g: the one shared library the binary links besides glibc (already in the slim image;
# named so that removing it from the base would fail here rather than at start-up).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates zlib1g \
 && rm -rf /var/lib/apt/lists/*

# A fixed, unprivileged uid/gid (10001) so volume and secret file permissions can be planned.
RUN groupadd --system --gid 10001 costline \
 && useradd --system --uid 10001 --gid costline --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin costline

COPY --from=builder /usr/local/bin/costline /usr/local/bin/costline

# Fails the build if the binary cannot load its shared libraries in this base image.
RUN ["costline", "--version"]

USER 10001:10001

# Metrics, /healthz and /readyz. The built-in default is loopback (127.0.0.1:9464), which is
# unreachable from outside a container, so the image listens on all interfaces. Environment
# variables override the config file: to move the port, set COSTLINE_HTTP__LISTEN, not
# http.listen in the file. On this address `costline run` needs a token (COSTLINE_HTTP_TOKEN
# or http.token_file) for the API and ingest, or http.allow_unauthenticated = true.
ENV COSTLINE_HTTP__LISTEN=0.0.0.0:9464
EXPOSE 9464

# No HEALTHCHECK here, on purpose:
#  - the same image runs one-shot commands (`migrate`, `produce`) that serve no HTTP and would
#    be reported unhealthy, and the port is configurable, so a baked-in probe would be wrong
#    for some containers;
#  - curl/wget would add packages and attack surface for that alone;
#  - Kubernetes ignores HEALTHCHECK and uses httpGet probes on /healthz (liveness) and /readyz
#    (readiness) instead.
# docker-compose.yml defines the worker healthcheck with bash's /dev/tcp (no extra packages).

# costline handles SIGTERM/SIGINT itself (it flushes pending rollups, then exits), so it runs
# as PID 1 directly, without a shell or init wrapper in between.
STOPSIGNAL SIGTERM
ENTRYPOINT ["costline"]
CMD ["run"]
