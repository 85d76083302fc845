# The integration sidecar's image (and the injector's: `integration-sidecar injector ...`).
#
# Two stages: `build` installs the locked dependencies and the package into a virtualenv;
# the final stage copies only that virtualenv onto a clean slim Python, so no compiler, pip
# cache or source tree ships. It runs as a fixed non-root UID (10001, the UID the injector and
# the Helm chart put in runAsUser), needs nothing writable but /tmp (mount an emptyDir there;
# the root filesystem can be read-only: bytecode is compiled at build time), and has no
# HEALTHCHECK: Kubernetes probes the gRPC health service (grpc.health.v1.Health) directly.
#
# No Docker engine runs where this project is developed: tests/kubernetes/test_dockerfile.py
# checks this file instead (every COPY source exists, the lock file installs what the tests
# run with, the user, the entrypoint). Build: docker build -t integration-sidecar .

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
# Dependencies first, alone, so a source change reuses this layer. Regenerate the lock with
# scripts/lock-requirements.sh.
COPY requirements.lock /tmp/requirements.lock
RUN /opt/venv/bin/pip install --require-hashes --no-deps -r /tmp/requirements.lock
COPY pyproject.toml README.md /src/
COPY sidecar /src/sidecar
COPY generated /src/generated
RUN /opt/venv/bin/pip install --no-deps --no-build-isolation /src \
    && /opt/venv/bin/python -m compileall -q /opt/venv

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 sidecar \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin sidecar
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TMPDIR=/tmp
USER 10001:10001
WORKDIR /tmp
# 50051: the sidecar's gRPC port; 8443: the injector's HTTPS webhook.
EXPOSE 50051 8443
ENTRYPOINT ["integration-sidecar"]
CMD ["serve"]
