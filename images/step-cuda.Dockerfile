# The CUDA step image: damocles-step with the cuda feature (GPU column and tree builders for PC2,
# GPU proving for C2 and snap-up) and multicore SDR, on NVIDIA's CUDA runtime image. Step pods get
# the GPU from the NVIDIA device plugin (resources.limits nvidia.com/gpu, as the chart's PC2 and
# C2 profiles ask). Built on a machine that can pull the CUDA images (not in this repository's CI,
# which checks that every feature, binary and path named here exists: tests/images.rs):
#
#   docker build -f images/step-cuda.Dockerfile --build-arg VERSION=0.1.0 -t damocles-step:0.1.0-cuda .
#
# It runs as root for the same reason as images/step.Dockerfile (hostPath directories).
ARG CUDA_VERSION=12.4.1
ARG UBUNTU=ubuntu22.04

FROM docker.io/nvidia/cuda:${CUDA_VERSION}-devel-${UBUNTU} AS compiled
ARG RUST_VERSION=1.95.0
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl build-essential pkg-config \
      clang libhwloc-dev ocl-icd-opencl-dev \
 && rm -rf /var/lib/apt/lists/*
RUN curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
    | sh -s -- -y --profile minimal --default-toolchain ${RUST_VERSION}
ENV PATH=/root/.cargo/bin:${PATH}
WORKDIR /src
COPY . .
# nvcc compiles the GPU kernels (bellperson's and neptune's, through ec-gpu-gen) for the card
# generations named here. ec-gpu-gen's default stops at sm_86, whose kernels an H100/H200 (sm_90)
# cannot load: this list adds Ada (sm_89) and Hopper (sm_90), with PTX for later cards.
ARG EC_GPU_CUDA_NVCC_ARGS="--optimize=6 --threads=0 --fatbin --gpu-architecture=sm_86 \
--generate-code=arch=compute_75,code=sm_75 --generate-code=arch=compute_80,code=sm_80 \
--generate-code=arch=compute_86,code=sm_86 --generate-code=arch=compute_89,code=sm_89 \
--generate-code=arch=compute_90,code=[sm_90,compute_90]"
RUN cargo build --locked --release --features cuda,multicore-sdr --bin damocles-step \
 && install -D target/release/damocles-step /out/bin/damocles-step

FROM docker.io/nvidia/cuda:${CUDA_VERSION}-runtime-${UBUNTU}
ARG VERSION
LABEL org.opencontainers.image.title="damocles-step" \
      org.opencontainers.image.description="damocles-operator's proof steps (filecoin-proofs, CUDA, multicore SDR)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN apt-get update \
 && apt-get install -y --no-install-recommends libhwloc15 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=compiled /out/ /usr/local/
ENTRYPOINT ["/usr/local/bin/damocles-step"]
CMD ["--help"]
