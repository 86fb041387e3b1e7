# The CPU step image: damocles-step with the proofs stack and multicore SDR
# (FIL_PROOFS_USE_MULTICORE_SDR=1, which the chart's PC1 profile sets), on a distroless base
# (glibc, no shell) with the libraries it links beyond glibc (hwloc) in /usr/local/lib.
#
#   docker build -f images/step.Dockerfile --build-arg VERSION=0.1.0 -t damocles-step:0.1.0 .
#
# It runs as root: step pods write to hostPath directories (workspace, parameter and parent
# caches) that kubelet creates owned by root. scripts/build-images builds it where no base image
# can be pulled, as it builds images/operator.Dockerfile (BINARIES=prebuilt, a local RUNTIME_IMAGE).
# The GPU build is images/step-cuda.Dockerfile.
ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12
ARG BINARIES=compiled

FROM ${RUST_IMAGE} AS compiled
RUN apt-get update \
 && apt-get install -y --no-install-recommends libhwloc-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The shared libraries beyond glibc and libgcc go with the binary (hwloc and what it needs).
RUN cargo build --locked --release --features multicore-sdr --bin damocles-step \
 && install -D target/release/damocles-step /out/bin/damocles-step \
 && mkdir -p /out/lib \
 && ldd target/release/damocles-step | awk '$3 ~ /^\// {print $3}' \
    | grep -vE '/(libc|libm|libgcc_s|libpthread|libdl|librt)\.so' \
    | xargs -r cp -L -t /out/lib/

FROM scratch AS prebuilt
COPY out/ /out/

FROM ${BINARIES} AS binaries

FROM ${RUNTIME_IMAGE}
ARG VERSION
LABEL org.opencontainers.image.title="damocles-step" \
      org.opencontainers.image.description="damocles-operator's proof steps (filecoin-proofs, CPU, multicore SDR)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=binaries /out/ /usr/local/
ENV LD_LIBRARY_PATH=/usr/local/lib
ENTRYPOINT ["/usr/local/bin/damocles-step"]
CMD ["--help"]
