# Image gateway container. The config is not in the image: mount your config.yaml
# (docker-compose.yml mounts ./config.yaml; Kubernetes a ConfigMap).
#
#   docker build -t image-gateway .
#   docker run --rm -p 8080:8080 \
#       -v "$PWD/config.yaml:/etc/gateway/config.yaml:ro" \
#       -e DATABASE_URL=postgresql://USER:PASS@HOST:5432/gateway \
#       -e REDIS_URL=redis://HOST:6379/0 \
#       -e GATEWAY_JWT_SECRET=... \
#       image-gateway                       # = gateway serve
#   docker run --rm -v "$PWD/config.yaml:/etc/gateway/config.yaml:ro" \
#       -e DATABASE_URL=... image-gateway migrate
#
# Runs as user and group 10001 (`gateway`), the ids deploy/kubernetes/ and
# deploy/README.md name. What it writes: the reservation journal (usage.journal_dir,
# by default under /tmp) and, with the default file store, images under
# $GATEWAY_DATA_DIR (/data, a volume).

# ---------------------------------------------------------------- builder
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --upgrade pip wheel

WORKDIR /src

# Dependencies first, from pyproject.toml alone, so this layer stays cached
# while only the source changes.
COPY pyproject.toml ./
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /tmp/requirements.txt \
    && /opt/venv/bin/pip install -r /tmp/requirements.txt

# Then the package itself, built into a wheel and installed without deps.
COPY . .
RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir /tmp/wheels . \
    && /opt/venv/bin/pip install --no-deps /tmp/wheels/*.whl \
    && /opt/venv/bin/gateway --help > /dev/null

# ---------------------------------------------------------------- runtime
FROM python:3.11-slim

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid gateway --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin gateway

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
COPY migrations/ /app/migrations/
# The gateway's own data directory (stored images of the default file store), its user's.
RUN mkdir /data && chown 10001:10001 /data

ENV GATEWAY_CONFIG=/etc/gateway/config.yaml \
    GATEWAY_DATA_DIR=/data

USER 10001:10001

EXPOSE 8080

HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"

ENTRYPOINT ["gateway"]
CMD ["serve"]
