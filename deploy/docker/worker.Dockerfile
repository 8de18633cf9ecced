# syntax=docker/dockerfile:1
# lookstream worker image: `python -m workers.app worker segmentation|embedding|query`.
# Only the product (workers/{runtime,stages,media,adapters}, app.py); the developer tooling in workers/local/
# (the lookstream CLI, embedded stack, sample catalog, dlq tool) stays out: tests/unit/test_app_imports.py.
# No torch here: inference lives in Triton (deploy/docker/triton.Dockerfile).
#   docker build -f deploy/docker/worker.Dockerfile -t lookstream/worker:0.1.0 .

# ---- build: resolve and install the project into a self-contained venv
FROM python:3.11.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY contracts ./contracts
COPY workers/__init__.py workers/app.py ./workers/
COPY workers/runtime ./workers/runtime
COPY workers/stages ./workers/stages
COPY workers/media ./workers/media
COPY workers/adapters ./workers/adapters
RUN pip install --no-cache-dir "pip==24.3.1" \
    && pip install --no-cache-dir . \
    && if pip show torch >/dev/null 2>&1; then echo "torch must not be in the worker image" >&2; exit 1; fi \
    && python -m workers.app --help >/dev/null

# ---- runtime: the venv on a clean slim base, as a non-root user
FROM python:3.11.11-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="lookstream-worker" \
      org.opencontainers.image.source="https://example.invalid/lookstream" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 lookstream \
    && useradd --system --uid 10001 --gid lookstream --home-dir /home/lookstream --create-home \
       --shell /usr/sbin/nologin lookstream \
    && install -d -o lookstream -g lookstream /var/lib/lookstream
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MALLOC_ARENA_MAX=2 \
    LOOKSTREAM_METRICS_HOST=0.0.0.0 \
    LOOKSTREAM_METRICS_PORT=9100 \
    LOOKSTREAM_LOG_JSON=true \
    LOOKSTREAM_STATE_DIR=/var/lib/lookstream
WORKDIR /home/lookstream
USER 10001:10001
EXPOSE 9100
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=4 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9100/readyz', timeout=4)"]
ENTRYPOINT ["python", "-m", "workers.app"]
CMD ["worker", "--help"]
