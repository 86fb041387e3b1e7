# The operator image: damocles-operator alone (built without the dev stand-ins), as a non-root user
# on a distroless base (glibc, CA certificates, no shell).
#
#   docker build -f images/operator.Dockerfile --build-arg VERSION=0.1.0 -t damocles-operator:0.1.0 .
#
# from the repository root (VERSION is Cargo.toml's; the chart's appVersion is the default tag).
# scripts/build-images builds it where no base image can be pulled: BINARIES=prebuilt takes the
# binary the host built with the same toolchain from the build context's out/, and RUNTIME_IMAGE is
# a local image with the same contents as distroless cc.
ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot
ARG BINARIES=compiled

FROM ${RUST_IMAGE} AS compiled
WORKDIR /src
COPY . .
RUN cargo build --locked --release --no-default-features --bin damocles-operator \
 && install -D target/release/damocles-operator /out/bin/damocles-operator

FROM scratch AS prebuilt
COPY out/ /out/

FROM ${BINARIES} AS binaries

FROM ${RUNTIME_IMAGE}
ARG VERSION
LABEL org.opencontainers.image.title="damocles-operator" \
      org.opencontainers.image.description="Kubernetes operator that runs Filecoin sector sealing as SealingTask resources" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=binaries /out/ /usr/local/
# distroless's nonroot user; the chart runs it with a read-only root filesystem.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/damocles-operator"]
CMD ["--help"]
