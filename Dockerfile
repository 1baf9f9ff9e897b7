# syntax=docker/dockerfile:1.7

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS builder
# aws-lc-sys (JWT signatures) compiles C with the cc crate on x86_64/aarch64 Linux:
# a C toolchain is enough, no cmake, clang or Go unless the FIPS feature is on.
# Unpinned on purpose: the release's current (security-patched) packages are wanted.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Compile-time checked queries must not need a database during the image build.
ENV CARGO_INCREMENTAL=0 \
    CARGO_TERM_COLOR=never \
    SQLX_OFFLINE=true
COPY . .
# The registry and target dir live in BuildKit caches, so a source change only
# recompiles the crate itself; the binary is copied out of the cache mount.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin agentassist-hooks \
    && install -D -m 0755 target/release/agentassist-hooks /out/agentassist-hooks

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# curl only serves the HEALTHCHECK below and the compose file's readiness probe.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin app \
    && mkdir -p /app/data \
    && chown app:app /app/data
WORKDIR /app
COPY --from=builder /out/agentassist-hooks /usr/local/bin/agentassist-hooks
COPY config/ /app/config/
ENV HOOKS__SERVER__BIND=0.0.0.0:8080 \
    HOOKS__LOG__FORMAT=json
EXPOSE 8080
# Without DATABASE_URL the service keeps an embedded SQLite file in ./data.
VOLUME ["/app/data"]
# Numeric, so that orchestrators can verify runAsNonRoot without /etc/passwd.
USER 10001:10001
# Shell form for `|| exit 1`: Docker reserves health-check exit codes other than 0 and 1.
# hadolint ignore=DL3025
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD curl -fsS -o /dev/null http://127.0.0.1:8080/healthz || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/agentassist-hooks"]
CMD ["serve"]
