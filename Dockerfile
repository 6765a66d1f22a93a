# Image for the virtbus agent, built by scripts/build-image.sh (which makes the base
# image from Debian's mirror and puts the project's wheel and its dependencies' wheels in
# the build context's wheels/: the build needs no registry and no network).
#
# It talks to the host's Docker daemon through the mounted /var/run/docker.sock, as an
# unprivileged user that must be given the socket's group:
# `docker run --group-add "$(stat -c %g /var/run/docker.sock)"` (docker-compose.yml does
# it with DOCKER_GID).
ARG BASE=virtbus-base:bookworm
FROM ${BASE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/virtbus/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    VIRTBUS_STATE_DIR=/var/lib/virtbus \
    VIRTBUS_METRICS_HOST=127.0.0.1 \
    VIRTBUS_METRICS_PORT=9177
COPY wheels/ /tmp/wheels/
RUN python3 -m venv /opt/virtbus \
    && /opt/virtbus/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheels virtbus \
    && rm -rf /tmp/wheels \
    && useradd --system --uid 10001 --home-dir /var/lib/virtbus --no-create-home virtbus \
    && install -d -o virtbus -g virtbus -m 0700 /var/lib/virtbus
USER virtbus
WORKDIR /var/lib/virtbus
# /health answers 200 once the agent holds the broker and the engine, 503 otherwise
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ['VIRTBUS_METRICS_PORT'], timeout=4).status != 200)"]
ENTRYPOINT ["virtbus", "agent"]
