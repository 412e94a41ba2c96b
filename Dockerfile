# syntax=docker/dockerfile:1
# One image for every service: `mailroom run SERVICE` (or `all`), `mailroom migrate`.
# Build stage: uv installs the locked dependencies and the workspace (not editable) into
# /opt/venv. Runtime stage: the same slim Python with that venv only, as a non-root user.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

FROM ${PYTHON_IMAGE} AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
COPY libs libs
COPY services services
COPY mailroom mailroom
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --gid 10001 mailroom \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin mailroom
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MAILROOM_HTTP_PORT=8080 \
    MAILROOM_OPS_PORT=8081
USER 10001:10001
WORKDIR /tmp
# 8080: public pages (subscriptions, config admin API); 8081: /healthz, /readyz, /metrics
EXPOSE 8080 8081
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('MAILROOM_OPS_PORT', '8081'), timeout=3)"]
ENTRYPOINT []
CMD ["mailroom", "run", "all"]
