# Control-plane image: the `meshplane` console script (Python 3.11) in a virtualenv, run as a
# non-root user. Build from the repository root:
#
#   docker build -f deploy/docker/controlplane.Dockerfile -t ghcr.io/meshplane/meshplane:0.1.0 .
#
# The base is pinned by exact tag. For a release, pin its digest as well, resolved once with
#   docker buildx imagetools inspect python:3.11.14-slim-bookworm   (the "Digest:" line)
# and built with
#   --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:<digest>
# Any Debian-based image with python3 (3.11+), the venv module and useradd works as PYTHON_IMAGE;
# deploy/docker/verify-local.sh builds one from Debian packages when no image registry is reachable.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---------------------------------------------------------------- build: wheel + venv
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# Optional pip constraints file inside the build context (e.g. a lock exported for releases).
ARG PIP_CONSTRAINT=
WORKDIR /src
# Only what the distribution is built from (pyproject.toml packages controlplane, agent_runtime
# and the generated code under generated/python).
COPY pyproject.toml README.md ./
COPY controlplane/ controlplane/
COPY agent_runtime/ agent_runtime/
COPY generated/python/ generated/python/
RUN python3 -m venv /opt/meshplane \
 && /opt/meshplane/bin/pip install --quiet --upgrade pip \
 && /opt/meshplane/bin/pip wheel --quiet --no-deps --wheel-dir /wheels . \
 && /opt/meshplane/bin/pip install --quiet ${PIP_CONSTRAINT:+--constraint "$PIP_CONSTRAINT"} /wheels/meshplane-*.whl \
 && /opt/meshplane/bin/pip uninstall --quiet --yes pip \
 && /opt/meshplane/bin/meshplane --help >/dev/null

# ---------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="meshplane" \
      org.opencontainers.image.description="Meshplane control plane" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/meshplane/meshplane" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed uid/gid (10001) that the Helm chart's securityContext names as well.
RUN groupadd --system --gid 10001 meshplane \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/meshplane --no-create-home \
      --shell /usr/sbin/nologin meshplane \
 && mkdir -p /var/lib/meshplane \
 && chown 10001:10001 /var/lib/meshplane
COPY --from=build /opt/meshplane /opt/meshplane
ENV PATH=/opt/meshplane/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MESHPLANE_DATA_DIR=/var/lib/meshplane \
    MESHPLANE_LISTEN=0.0.0.0:50051
WORKDIR /var/lib/meshplane
USER 10001:10001
# gRPC (agents, clients, gateway) and Prometheus metrics (when MESHPLANE_METRICS_LISTEN is set).
EXPOSE 50051 9090
ENTRYPOINT ["meshplane"]
CMD ["up"]
