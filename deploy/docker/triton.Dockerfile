# syntax=docker/dockerfile:1
# NVIDIA Triton + the model environment (requirements-models.txt) for the python-backend models in triton_models/.
#   docker build -f deploy/docker/triton.Dockerfile --target server      -t lookstream/triton:0.1.0 .
#   docker build -f deploy/docker/triton.Dockerfile --target models-pull -t lookstream/models-pull:0.1.0 .
#
# Why 25.01 and not 24.10: transformers==5.24.0 needs Python >= 3.11; the 24.x images are Ubuntu 22.04 with
# Python 3.10 (their python-backend stub is built for 3.10). 25.x images are Ubuntu 24.04 with Python 3.12,
# for which torch 2.14.1 / torchvision 0.29.1 / numpy 1.26.4 wheels exist.

# ---- models: Triton plus torch, torchvision, transformers, numpy<2 in the interpreter the python backend runs
FROM nvcr.io/nvidia/tritonserver:25.01-py3 AS models
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OMP_NUM_THREADS=1 \
    HF_HOME=/tmp/hf \
    HF_HUB_OFFLINE=1
COPY requirements-models.txt /opt/lookstream/requirements-models.txt
# numpy must stay < 2 for the python-backend stub (docs/local-services.md); the check fails the build otherwise.
RUN python3 -m pip install --no-cache-dir -r /opt/lookstream/requirements-models.txt \
    && python3 -c "import numpy, torch, torchvision, transformers; assert numpy.__version__.startswith('1.'), numpy.__version__; print('torch', torch.__version__, 'transformers', transformers.__version__)"
RUN groupadd --system --gid 10001 lookstream \
    && useradd --system --uid 10001 --gid lookstream --home-dir /home/lookstream --create-home \
       --shell /usr/sbin/nologin lookstream

# ---- models-pull: the lookstream CLI + modeltools next to torch, to materialise weights into triton_models/.
# `lookstream models pull` runs modeltools/weights.py from its checkout (workers/local/model_repo.py: ROOT = the source
# tree, hence the editable install) with the python of LOOKSTREAM_MODEL_ENV: a venv that sees the system torch.
FROM models AS models-pull
ENV HF_HUB_OFFLINE=0 \
    LOOKSTREAM_MODEL_ENV=/opt/lookstream-venv \
    PATH=/opt/lookstream-venv/bin:$PATH
WORKDIR /srv/lookstream
COPY pyproject.toml README.md ./
COPY contracts ./contracts
COPY workers ./workers
COPY modeltools ./modeltools
COPY triton_models ./triton_models
RUN python3 -m venv --without-pip --system-site-packages /opt/lookstream-venv \
    && /opt/lookstream-venv/bin/python -m pip install --no-cache-dir -e . \
    && /opt/lookstream-venv/bin/python -c "import numpy, torch; assert numpy.__version__.startswith('1.'), numpy.__version__" \
    && lookstream --help >/dev/null \
    && chown -R lookstream:lookstream /srv/lookstream
USER 10001:10001
ENTRYPOINT ["lookstream"]
CMD ["models", "pull"]

# ---- server (default target): render the GPU repository from the mounted /models, then run Triton, non-root.
# The committed config.pbtxt files are CPU templates; deploy/docker/triton_start.py applies
# workers.local.model_repo.render_config (KIND_GPU, instances, SegFormer size, TRITON_BACKEND) into /tmp/model_repository:
# by default Triton's native onnxruntime backend with TensorRT FP16 on the exported model.onnx.
FROM models AS server
COPY workers/__init__.py /opt/lookstream/workers/
COPY workers/local/__init__.py workers/local/model_repo.py workers/local/model_weights.py /opt/lookstream/workers/local/
COPY workers/adapters/__init__.py workers/adapters/triton_config.py /opt/lookstream/workers/adapters/
COPY deploy/docker/triton_start.py /opt/lookstream/triton_start.py
ENV TRITON_MODEL_SOURCE=/models \
    TRITON_MODEL_REPOSITORY=/tmp/model_repository \
    TRITON_DEVICE=gpu \
    TRITON_BACKEND=onnxruntime \
    TRITON_INSTANCES=1
USER 10001:10001
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=8 \
  CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=4)"]
CMD ["python3", "/opt/lookstream/triton_start.py", "--model-control-mode=explicit", "--load-model=segformer", "--load-model=resnet50", "--strict-readiness=true", "--exit-on-error=true", "--allow-metrics=true", "--allow-gpu-metrics=true", "--metrics-port=8002"]
