# syntax=docker/dockerfile:1
# One image recipe for every ehrflow service. Build from the repository root:
#   docker build --build-arg SERVICE=ingest -t ehrflow-ingest .
# SERVICE is one of auth, ingest, inference, writeback. The base image is pinned by digest; refresh it on
# purpose (`docker buildx imagetools inspect python:3.11-slim`), never by a moving tag.
ARG PYTHON_IMAGE=python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
# Dependency layer first, the same for every service (SERVICE is declared after it, so Docker's cache
# shares it between the four builds). The locks are complete: pip installs exactly them and resolves
# nothing (--no-deps), and `pip check` below proves nothing is missing.
COPY requirements-runtime.lock requirements-build.lock ./
RUN python -m venv /opt/venv \
    && /opt/venv/bin/python -m pip install --no-cache-dir --no-deps --require-hashes -r requirements-runtime.lock \
    && python -m venv /opt/build \
    && /opt/build/bin/python -m pip install --no-cache-dir --no-deps --require-hashes -r requirements-build.lock
ARG SERVICE
COPY libs/contracts libs/contracts
COPY libs/runtime libs/runtime
COPY services/${SERVICE} services/${SERVICE}
# ehrflow's own packages are built with the pinned back-end (no build isolation, so nothing is fetched);
# `ehrflow-service` names the chosen service's entry point, so one ENTRYPOINT serves every image.
RUN test -n "${SERVICE}" \
    && /opt/build/bin/python -m pip wheel --no-cache-dir --no-deps --no-build-isolation -w /wheels \
        libs/contracts libs/runtime "services/${SERVICE}" \
    && /opt/venv/bin/python -m pip install --no-cache-dir --no-deps --no-index /wheels/*.whl \
    && /opt/venv/bin/python -m pip check \
    && ln -s "ehrflow-${SERVICE}" /opt/venv/bin/ehrflow-service

FROM ${PYTHON_IMAGE}
ARG SERVICE
LABEL org.opencontainers.image.title="ehrflow-${SERVICE}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/venv /opt/venv
# Every service listens on 8080 in its container (the Helm chart's Services map their own ports to it).
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    EHRFLOW_HOST=0.0.0.0 EHRFLOW_PORT=8080
# Non-root numeric user; the root filesystem can be mounted read-only (nothing is written outside /tmp).
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["/opt/venv/bin/ehrflow-service"]
