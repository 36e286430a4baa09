# syntax=docker/dockerfile:1.7
#
# Images for `docker compose up` (see docs/deploy.md):
#   target `agent` (default) - the worker: `python -m agent start`
#   target `web`             - the browser page + token endpoint: `python -m agent web`
#
# Stages: `web-deps` (npm: the pinned livekit-client), `builder` (a venv with the Python
# dependencies and the model files), `runtime` (slim, non-root base), then `web` and `agent`.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
ARG NODE_IMAGE=node:22.23.4-bookworm-slim

# --- livekit-client for the page, exactly as web/package-lock.json pins it --------------------
FROM ${NODE_IMAGE} AS web-deps
WORKDIR /web
COPY web/package.json web/package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

# --- Python dependencies and model files ------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder
# Optional speech-provider extras from pyproject.toml, e.g. "openai,deepgram" or "all-providers".
ARG EXTRAS=openai
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HF_HOME=/opt/models/huggingface
RUN python -m venv /opt/venv
WORKDIR /src
# Dependencies first, so code edits reuse this layer: pyproject.toml's ranges, at the exact
# versions of constraints.txt (the set the test suite runs against).
COPY pyproject.toml README.md constraints.txt ./
RUN python - <<'EOF' > /tmp/requirements.txt
import os, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
reqs = list(project["dependencies"])
for extra in filter(None, (e.strip() for e in os.environ.get("EXTRAS", "").split(","))):
    reqs += project["optional-dependencies"][extra]
print("\n".join(reqs))
EOF
RUN pip install -r /tmp/requirements.txt -c constraints.txt
COPY agent ./agent
COPY brain ./brain
COPY bridge ./bridge
COPY providers ./providers
RUN pip install --no-deps .
# Model files at build time, not at the first call: livekit-agents' download-files fetches what
# the installed plugins need (Silero's VAD, pocketsphinx's model and espeak-ng's data already
# ship inside their wheels). Then prove the offline voice stack loads without the network.
RUN mkdir -p /opt/models \
 && python -m agent download-files \
 && python -c "import livekit.plugins.silero, pocketsphinx, espeakng_loader; print('models ok')"

# --- slim non-root base for both services -----------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HOME=/opt/models/huggingface \
    HF_HUB_OFFLINE=1
# HF_HUB_OFFLINE: model files come from the build (/opt/models, read-only), never from a first call.
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app \
 && mkdir -p /app && chown app:app /app
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /opt/models /opt/models
WORKDIR /app

# --- the web page and token endpoint ----------------------------------------------------------
FROM runtime AS web
ENV WEB_ROOT=/app/web \
    WEB_HOST=0.0.0.0 \
    WEB_PORT=8080
COPY web/public /app/web/public
COPY --from=web-deps /web/node_modules/livekit-client/dist /app/web/node_modules/livekit-client/dist
USER app
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('WEB_PORT', '8080'), timeout=2)"]
CMD ["python", "-m", "agent", "web"]

# --- the worker (default target) --------------------------------------------------------------
FROM runtime AS agent
USER app
# The worker answers GET / on AGENT_HTTP_PORT (default 8081) while healthy.
EXPOSE 8081
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/' % (os.environ.get('AGENT_HTTP_PORT') or '8081'), timeout=2)"]
CMD ["python", "-m", "agent", "start"]
