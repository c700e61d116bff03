# InferenceGym OpenEnv server, CPU image (Hugging Face Space ready: runs as uid 1000, listens on $PORT).
#   docker build -t inferencegym . && docker run -p 8000:8000 inferencegym
# The install step is the one CI runs (`make install`: pip install -e ".[server,dev]"), minus the dev tools.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    JAX_PLATFORMS=cpu \
    INFERENCEGYM_PREWARM=1 \
    PORT=8000

RUN useradd --create-home --uid 1000 user
WORKDIR /app
COPY --chown=user pyproject.toml README.md openenv.yaml inference.py ./
COPY --chown=user gymjax ./gymjax
COPY --chown=user ppo ./ppo
COPY --chown=user server ./server
COPY --chown=user inferencegym ./inferencegym
RUN python -m pip install --upgrade pip && python -m pip install -e ".[server]" && chown -R user /app

USER user
EXPOSE 8000
# first compilation of every task happens in the background at startup; /health answers at once
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\", \"8000\")}/health', timeout=4)"
# server.app's main(): uvicorn with the WebSocket transport limit (ws_max_size) the docs promise; reads $PORT
CMD ["python", "-m", "server.app"]
