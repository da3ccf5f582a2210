# mshared, the mshare broker, as a container image.
#
#   docker build -t mshared:0.1.0 .
#   docker volume create mshare
#   docker run -d --name mshared -v mshare:/run/mshare -p 127.0.0.1:9464:9464 mshared:0.1.0
#   docker run --rm -v mshare:/run/mshare:ro -e MSHARE_RUN_DIR=/run/mshare --user 1000:1000 APP_IMAGE ...
#
# Clients need nothing but the run directory (a volume): no --ipc=host, no
# shared PID namespace, no large /dev/shm; they may mount it read-only.
# deploy/kubernetes and deploy/systemd show the other ways to run it.

# Both stages use the same interpreter, so the venv built in the first runs in
# the second unchanged. Pinned by tag; pin the digest too where your registry
# policy asks for it.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/mshare
# The dependencies are pinned in pyproject.toml; README.md is its readme.
COPY pyproject.toml README.md ./
COPY client ./client
COPY server ./server
# pip compiles every module while installing: the .pyc files ship, so a
# read-only root filesystem costs no start-up time.
RUN /opt/mshare/bin/pip install --no-cache-dir . \
    && /opt/mshare/bin/pip uninstall --yes pip

FROM ${PYTHON_IMAGE}
ARG PYTHON_IMAGE
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="mshared" \
      org.opencontainers.image.description="mshare broker: msharefs-style namespaces of fixed-address shared memory (memfd) for Linux" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
# A uid and gid of the broker's own, used by no application: every memfd is
# owned by the broker's uid with mode 0600, so a client running as the same uid
# could reopen a read-only region for writing (docs/security.md).
ARG MSHARE_UID=10001
RUN groupadd --system --gid "${MSHARE_UID}" mshare \
    && useradd --system --uid "${MSHARE_UID}" --gid "${MSHARE_UID}" --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin mshare \
    && install -d -o "${MSHARE_UID}" -g "${MSHARE_UID}" -m 0755 /run/mshare
COPY --from=build /opt/mshare /opt/mshare
# Write no .pyc files at run time (the ones pip compiled ship in the image): the
# root filesystem may be read-only, as the Kubernetes manifests make it.
ENV PATH=/opt/mshare/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MSHARE_RUN_DIR=/run/mshare
USER ${MSHARE_UID}:${MSHARE_UID}
# Mounted over by the volume that clients share; a fresh named volume starts
# from this directory: 0755 and owned by the broker, as clients require (they
# refuse a run directory that others may write to).
VOLUME ["/run/mshare"]
EXPOSE 9464
# SIGTERM drains (health NOT_SERVING, in-flight calls get --grace seconds); a
# second signal exits at once. `docker stop` waits 10 s, more than the default 5 s grace.
STOPSIGNAL SIGTERM
# `mshare health` is a grpc.health.v1 check through $MSHARE_RUN_DIR/mshare.sock;
# it exits 0 only when the broker is SERVING.
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["mshare", "health", "--timeout", "3"]
ENTRYPOINT ["mshared"]
# Metrics listen on every address of the container (the daemon's default is
# loopback only, which nothing outside the container could scrape).
CMD ["--run-dir", "/run/mshare", "--metrics-address", "0.0.0.0:9464"]
