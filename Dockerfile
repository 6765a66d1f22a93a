# Image for the virtbus agent. It talks to the host's Docker daemon through the mounted
# /var/run/docker.sock (see docker-compose.yml), as an unprivileged user that must be
# given the socket's group: `docker run --group-add "$(stat -c %g /var/run/docker.sock)"`
# (docker-compose.yml does it with DOCKER_GID).

# The same wheel as `python -m build` makes, built from the source tree.
FROM python:3.11-slim AS wheel
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY agent/ ./agent/
COPY schemas/ ./schemas/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTBUS_STATE_DIR=/var/lib/virtbus \
    VIRTBUS_METRICS_HOST=127.0.0.1 \
    VIRTBUS_METRICS_PORT=9177
COPY --from=wheel /dist/ /tmp/dist/
RUN pip install --no-cache-dir /tmp/dist/*.whl \
    && rm -rf /tmp/dist \
    && useradd --system --uid 10001 --home-dir /var/lib/virtbus --no-create-home virtbus \
    && install -d -o virtbus -g virtbus -m 0700 /var/lib/virtbus
USER virtbus
WORKDIR /var/lib/virtbus
# /health answers 200 once the agent holds the broker and the engine, 503 otherwise
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9177/health', timeout=4).status != 200)"]
ENTRYPOINT ["virtbus", "agent"]
