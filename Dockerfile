# syntax=docker/dockerfile:1
# rmserve serving image: `rmserve serve` on an artifact folder mounted at /models/rmserve.
#
#   docker build -t rmserve:0.1.0-gpu .                          # GPU (default)
#   docker build -t rmserve:0.1.0-cpu --build-arg VARIANT=cpu .  # CPU-only clusters
#   docker run --gpus 1 -p 50051:50051 -p 9400:9400 \
#     -v "$PWD/demo/artifact:/models/rmserve:ro" rmserve:0.1.0-gpu
#
# CUDA libraries, provided in exactly ONE way: a slim Python base image (no CUDA in it) plus
# NVIDIA's pip wheels pulled in by the `rmserve[cuda]` extra, i.e. onnxruntime-gpu 1.31's
# `[cuda,cudnn]` extras: CUDA 13 runtime (nvidia-cuda-runtime ~=13.0, with cuBLAS, cuFFT,
# cuRAND, NVRTC of CUDA 13) and cuDNN 9 (nvidia-cudnn-cu13 ~=9.0). No nvidia/cuda base image,
# so CUDA is never shipped twice. The host only needs the NVIDIA driver (>= 580 for CUDA 13).
# The CPU variant installs rmserve without that extra: onnxruntime-gpu then runs its CPU provider.
#
# The runtime stage has no torch, no compilers and no build tools: only the venv built below.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# gpu: rmserve[cuda] (CUDA 13 + cuDNN 9 wheels); cpu: plain rmserve.
ARG VARIANT=gpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml README.md ./
COPY locks ./locks
COPY rmserve ./rmserve
COPY rmserve_training ./rmserve_training
COPY docker/install-venv.sh ./docker/
# Install the variant's locked environment (exact versions, hashes) and rmserve into a fresh venv. The same script is
# run by tests/deploy/test_install_steps.py; torch (the `train` extra) is never installed.
RUN sh docker/install-venv.sh /src /opt/venv "${VARIANT}"

FROM ${PYTHON_IMAGE} AS runtime
ARG VARIANT=gpu
LABEL org.opencontainers.image.title="rmserve" \
      org.opencontainers.image.description="Bradley-Terry reward model server (gRPC, dynamic batching)" \
      dev.rmserve.variant="${VARIANT}"
# The server installs nothing at run time: drop the base image's pip, setuptools and wheel (and
# ensurepip's bundled copies) so nothing in the container can fetch and install packages.
RUN python -m pip uninstall --quiet --yes --root-user-action=ignore pip setuptools wheel \
    && rm -rf /usr/local/lib/python3.11/ensurepip/_bundled \
    && useradd --no-log-init --system --uid 10001 --user-group --create-home \
      --home-dir /home/rmserve rmserve
COPY --from=build /opt/venv /opt/venv
# The CUDA provider library dlopens libcudart/libcublas/libcudnn; point the loader at the pip
# wheels' folders (absent, and so ignored, in the CPU variant).
ENV PATH=/opt/venv/bin:${PATH} \
    LD_LIBRARY_PATH=/opt/venv/lib/python3.11/site-packages/nvidia/cu13/lib:/opt/venv/lib/python3.11/site-packages/nvidia/cudnn/lib \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RMSERVE_ARTIFACT=/models/rmserve \
    RMSERVE_HOST=0.0.0.0 \
    RMSERVE_PORT=50051 \
    RMSERVE_HEALTH_PORT=50052 \
    RMSERVE_METRICS_PORT=9400
# The artifact folder (model.onnx [+ model.onnx.data], tokenizer.json, manifest.json) is mounted
# here read-only.
VOLUME ["/models/rmserve"]
USER 10001:10001
WORKDIR /home/rmserve
# gRPC (RewardService, grpc.health.v1, reflection), plaintext health-only gRPC (probes can't
# speak TLS) and Prometheus /metrics.
EXPOSE 50051 50052 9400
# grpc.health.v1 Check on 127.0.0.1:$RMSERVE_HEALTH_PORT; exit 0 only when SERVING.
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-m", "rmserve.server.healthcheck"]
ENTRYPOINT ["rmserve", "serve"]
