# Container image for partkeeper: a multi-stage build that compiles the release binary with the
# Rust toolchain and ships it alone on debian:bookworm-slim, running as a non-root numeric user.
#
#   docker build -t partkeeper .
#   docker run --rm -e DATABASE_URL=postgres://... \
#     -v "$PWD/partkeeper.toml:/etc/partkeeper/partkeeper.toml:ro" -p 9790:9790 partkeeper
#
# ENTRYPOINT is the binary and CMD the daemon, so `docker run partkeeper maintain --dry-run` or
# `docker run partkeeper check` run the one-shot commands with the same image.

# ---- build stage -------------------------------------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /src

# Dependency-caching layer: build every dependency against empty sources, so that this layer is
# only rebuilt when Cargo.toml or Cargo.lock change, not on every source edit.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src

# The real sources (add a COPY here if the crate ever gains a build.rs or files it embeds at compile
# time). COPY keeps the files' own (older) modification times, which would make cargo
# think the placeholder build above is still fresh: touch them so the crate itself is rebuilt.
COPY src ./src
RUN find src -name '*.rs' -exec touch {} + \
    && cargo build --release --locked \
    && install -m 0755 target/release/partkeeper /usr/local/bin/partkeeper \
    && /usr/local/bin/partkeeper --help > /dev/null

# ---- runtime stage -----------------------------------------------------------------------------
FROM debian:bookworm-slim

# ca-certificates: the CA bundle for TLS to PostgreSQL, e.g. sslrootcert=/etc/ssl/certs/ca-certificates.crt
# in DATABASE_URL (the binary also carries the webpki roots). Not pinned (hadolint DL3008): a
# pinned version stops installing when a Debian point release replaces it, and the CA bundle
# should follow Debian's updates anyway.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*

COPY --from=builder /usr/local/bin/partkeeper /usr/local/bin/partkeeper

LABEL org.opencontainers.image.title="partkeeper" \
      org.opencontainers.image.description="Keeps PostgreSQL range-partitioned tables healthy" \
      org.opencontainers.image.source="https://github.com/partkeeper/partkeeper" \
      org.opencontainers.image.licenses="Apache-2.0"

# The configuration is mounted here (a ConfigMap in Kubernetes); DATABASE_URL comes from the
# environment (a Secret) and overrides database.url.
ENV PARTKEEPER_CONFIG=/etc/partkeeper/partkeeper.toml

# A numeric user, so that Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 65532:65532

# /healthz, /readyz, /metrics and /status of `partkeeper run` ([server] listen).
EXPOSE 9790

# No HEALTHCHECK: the slim image has no curl or wget, and adding one only for this would grow the
# image and its attack surface. Kubernetes ignores HEALTHCHECK anyway and probes /healthz and
# /readyz itself (deploy/kubernetes/deployment.yaml); under plain Docker, probe
# http://<container>:9790/healthz from outside.
ENTRYPOINT ["partkeeper"]
CMD ["run"]
