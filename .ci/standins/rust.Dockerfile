# Stand-in for rust:<version>-slim-bookworm, which CI cannot pull: the debootstrap'd
# Debian root (BASE_IMAGE) with the packages the official slim image installs, this
# machine's Rust toolchain laid out as the official image lays out rustup's, and this
# machine's extra CA certificates (its egress to crates.io is TLS-intercepted).
# Built by .ci/container; the build context is a staging folder it prepares.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
# The official slim image's own package list (docker-library/rust, slim variant).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates gcc libc6-dev wget \
    && rm -rf /var/lib/apt/lists/*
COPY ca-certificates/ /usr/local/share/ca-certificates/
RUN update-ca-certificates
ARG RUST_TOOLCHAIN
ENV RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
COPY toolchain/ /usr/local/rustup/toolchains/${RUST_TOOLCHAIN}/
RUN mkdir -p /usr/local/cargo/bin \
    && for tool in cargo rustc rustdoc; do \
        ln -s "/usr/local/rustup/toolchains/${RUST_TOOLCHAIN}/bin/${tool}" /usr/local/cargo/bin/; \
    done \
    && cargo --version \
    && rustc --version
