# Image for the virtbus agent.  It talks to the host's Docker daemon through
# the mounted /var/run/docker.sock (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY agent/ ./agent/
COPY schemas/ ./schemas/
RUN pip install --no-cache-dir . && rm -rf /src

WORKDIR /
ENTRYPOINT ["virtbus", "agent"]
