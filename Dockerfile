# InferenceGym OpenEnv server, CPU image (Hugging Face Space ready: runs as uid 1000, listens on $PORT).
#   docker build -t inferencegym . && docker run -p 8000:8000 inferencegym
# Dependencies are the ones uv.lock pins (the `server` extra, no dev tools), installed without resolving
# again; the project's own machines have no container runtime, so this file is checked by
# tests/test_image.py (lock vs pyproject vs the test environment, and the build-time compile step) rather
# than built there. docs/server.md, "Docker".
#
# Pinned base image: a full version tag. Where a registry is reachable, pin its digest too
# (`docker buildx imagetools inspect python:3.11.7-slim-bookworm`, then FROM python:3.11.7-slim-bookworm@sha256:...).
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    JAX_PLATFORMS=cpu \
    JAX_COMPILATION_CACHE_DIR=/app/.jax-cache \
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 \
    INFERENCEGYM_PREWARM=1 \
    PORT=8000

RUN useradd --create-home --uid 1000 user
WORKDIR /app
COPY --chown=user pyproject.toml uv.lock README.md openenv.yaml inference.py ./
COPY --chown=user gymjax ./gymjax
COPY --chown=user ppo ./ppo
COPY --chown=user server ./server
COPY --chown=user inferencegym ./inferencegym
# the locked versions (hash-checked), then the project itself with no dependency resolution
RUN python -m pip install "uv==0.13.8" \
    && uv export --frozen --no-dev --extra server --no-emit-project --format requirements.txt -o /tmp/requirements.txt \
    && python -m pip install --no-deps -r /tmp/requirements.txt \
    && python -m pip install --no-deps -e . \
    && python -m pip uninstall -y uv \
    && rm /tmp/requirements.txt \
    && chown -R user /app

USER user
# a warm compile cache: every served task compiled once at build time into JAX's persistent cache
# (JAX_COMPILATION_CACHE_DIR), so a start loads the executables instead of compiling them (~24 s)
RUN python -m server.app --compile-only
EXPOSE 8000
# the prewarm at startup then loads each task from the cache; /health answers at once
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\", \"8000\")}/health', timeout=4)"
# server.app's main(): uvicorn with the WebSocket transport limit (ws_max_size) the docs promise; reads $PORT
CMD ["python", "-m", "server.app"]
