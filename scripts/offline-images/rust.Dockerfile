# Stand-in for the registry image rust:1.95-slim-bookworm (deploy/Dockerfile's builder),
# made by scripts/test-deploy where no image registry is reachable: the local
# debian:bookworm-slim plus this machine's own Rust toolchain (the build context holds the
# rustup toolchain's bin, lib and libexec, and the machine's own CA certificates, so that
# cargo reaches crates.io through the machine's TLS proxy as the machine does). Laid out as
# the registry image is: RUSTUP_HOME and CARGO_HOME under /usr/local, cargo on PATH, gcc
# and libc6-dev for linking.
FROM debian:bookworm-slim
ARG RUST_VERSION=1.95.0
ENV RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    RUST_VERSION=${RUST_VERSION}
COPY ca-certificates/ /usr/local/share/ca-certificates/
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
# No rustup: the toolchain's own binaries, linked where rustup's proxies would be.
COPY bin /usr/local/rustup/toolchain/bin
COPY lib /usr/local/rustup/toolchain/lib
COPY libexec /usr/local/rustup/toolchain/libexec
RUN mkdir -p /usr/local/cargo/bin \
    && for tool in cargo rustc rustdoc; do ln -s "/usr/local/rustup/toolchain/bin/$tool" "/usr/local/cargo/bin/$tool"; done \
    && cargo --version && rustc --version
