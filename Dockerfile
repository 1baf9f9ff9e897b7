# The service's image: `docker build -t agentassist-hooks .` (README, "Deployment with
# Docker"). CI builds and runs this file for real (.ci/container).
#
# The base images are build arguments. The defaults are the public images; a build that
# cannot pull them passes its own, as CI does with stand-ins it builds locally
# (--build-arg BUILDER_IMAGE=… --build-arg RUNTIME_IMAGE=…). Builder and runtime must be
# the same Debian release (the binary links against its glibc).
# No `# syntax=` line and no BuildKit-only instructions: the builder's built-in frontend
# (or the legacy builder) reads this file with nothing pulled from a registry.
ARG BUILDER_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${BUILDER_IMAGE} AS builder
# The slim Rust image already has gcc and libc6-dev: all that aws-lc-sys (JWT signatures)
# and the bundled SQLite need to compile their C with the cc crate.
WORKDIR /src
ENV CARGO_INCREMENTAL=0 \
    CARGO_TERM_COLOR=never \
    SQLX_OFFLINE=true
# Dependencies first, from the manifests alone with an empty crate in place of ours: this
# layer (the crates downloaded and compiled, most of the build's time) is reused until
# Cargo.toml or Cargo.lock changes. Then the crate's own artefacts are cleaned, so the
# build below always compiles the real sources whatever their timestamps.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && cp src/main.rs build.rs \
    && touch src/lib.rs \
    && cargo build --release --locked --bin agentassist-hooks \
    && cargo clean --release -p agentassist-hooks \
    && rm -rf src build.rs
COPY . .
RUN cargo build --release --locked --bin agentassist-hooks \
    && install -D -m 0755 target/release/agentassist-hooks /out/agentassist-hooks

FROM ${RUNTIME_IMAGE} AS runtime
# Nothing is installed: the binary needs only glibc (TLS to PostgreSQL is rustls, with
# the public CA roots compiled in), and the health check is its own `healthcheck` command.
# /app/data belongs to the service's user, and a fresh named volume mounted there takes
# that ownership, so the embedded SQLite store is writable without running as root.
RUN groupadd --system --gid 10001 app \
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
# GET /readyz on 127.0.0.1:8080; exits 0 on a 2xx answer, 1 otherwise (the only codes
# Docker allows), within 2 s.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/agentassist-hooks", "healthcheck"]
# The binary is PID 1 and handles SIGTERM itself: it stops accepting, lets in-flight
# requests finish (up to server.shutdown_timeout_seconds, 30 s) and exits 0. It starts
# no child processes, so there are none to reap.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/agentassist-hooks"]
CMD ["serve"]
