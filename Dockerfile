# mshared as a container: the broker runs as its own uid and serves /run/mshare.
# Share that directory (a volume) with the containers whose processes map regions.

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY client ./client
COPY server ./server
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="mshared" \
      org.opencontainers.image.description="mshare broker: msharefs-style namespaces of fixed-address shared memory" \
      org.opencontainers.image.licenses="Apache-2.0"
# A uid no application uses: read-only attachments rely on the memfds being owned by it.
RUN groupadd --system --gid 10001 mshare \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin mshare \
    && install -d -o 10001 -g 10001 -m 0755 /run/mshare
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels mshare && rm -rf /wheels
USER 10001:10001
ENV MSHARE_RUN_DIR=/run/mshare
VOLUME ["/run/mshare"]
EXPOSE 9464
ENTRYPOINT ["mshared"]
CMD ["--run-dir", "/run/mshare", "--metrics-address", "0.0.0.0:9464"]
