# gitopsd's container image: the binary and kustomize on a small Debian base, run as uid 65532
# (the "nonroot" user of distroless images) with a read-only root filesystem; only the state
# dir's volume (/var/lib/gitopsd; gitopsd makes its own `state` directory in it, which it
# owns whoever owns the volume) and the publish destination need to be writable.
#
# Not built by this repository's tests (they have no registry to pull base images from);
# tests/integration/sidecar.rs runs the binary the way this image does: uid 65532, settings
# from GITOPSD_* variables only, everything read-only but the state dir and DEST.
#
#   docker build -t gitopsd .
#   docker run --read-only -v state:/var/lib/gitopsd -v data:/data \
#     -e GITOPSD_URL=https://github.com/org/fleet -e GITOPSD_DEST=/data/fleet gitopsd

# --- build ---------------------------------------------------------------------------------
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin gitopsd \
 && install -D -m 0755 target/release/gitopsd /out/gitopsd

# --- kustomize (renders kustomizations; a plain `gitopsd sync` does not need it) ------------
FROM registry.k8s.io/kustomize/kustomize:v5.7.1 AS kustomize

# --- runtime -------------------------------------------------------------------------------
FROM docker.io/library/debian:bookworm-slim
# OpenSSL and zlib are linked dynamically; CA certificates for https remotes; ssh for ssh://
# remotes (gitopsd runs `ssh` itself). git is not needed: gitopsd speaks the protocol.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g openssh-client \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o 65532 -g 65532 -m 0700 /var/lib/gitopsd
COPY --from=build /out/gitopsd /usr/bin/gitopsd
COPY --from=kustomize /app/kustomize /usr/bin/kustomize
USER 65532:65532
ENV HOME=/var/lib/gitopsd \
    GITOPSD_STATE_DIR=/var/lib/gitopsd/state \
    GITOPSD_LISTEN=0.0.0.0:9090
VOLUME ["/var/lib/gitopsd"]
EXPOSE 9090
ENTRYPOINT ["/usr/bin/gitopsd"]
CMD ["sync"]
