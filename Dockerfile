# Siyu's container image: one image for every role (siyu run --role web|worker|scheduler).
# Build: docker build -t siyu .   Run: see compose.yaml and docs/deploy.md.

# -- build: the virtualenv with Siyu and its dependencies -------------------------------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
RUN python -m venv /opt/venv
# Dependencies first (a layer reused while only the code changes), then the code.
COPY pyproject.toml README.md LICENSE ./
COPY bot ./bot
COPY handlers ./handlers
COPY scheduler ./scheduler
COPY storage ./storage
COPY templates ./templates
COPY config.example.toml ./
# Editable: templates/ and the migrations are read from /app, where the runtime copies them.
RUN /opt/venv/bin/pip install -e . \
    && /opt/venv/bin/python -m compileall -q /app/bot /app/handlers /app/scheduler /app/storage

# -- runtime: slim, non-root, no build tools ------------------------------------------
FROM python:3.11-slim AS runtime
LABEL org.opencontainers.image.title="Siyu" \
      org.opencontainers.image.description="Siyu (私域): private-domain operations bot" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SIYU_WEB_HOST=0.0.0.0 \
    SIYU_WEB_PORT=8080 \
    SIYU_LOGGING_FORMAT=json
RUN groupadd --system --gid 10001 siyu \
    && useradd --system --uid 10001 --gid siyu --home-dir /app --shell /usr/sbin/nologin siyu
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=root:root /app /app
WORKDIR /app
USER 10001:10001
EXPOSE 8080
# Liveness of whatever role runs here (every role serves /livez).
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/livez' % os.environ.get('SIYU_WEB_PORT', '8080'), timeout=2)"]
ENTRYPOINT ["siyu"]
CMD ["run", "--role", "web"]
