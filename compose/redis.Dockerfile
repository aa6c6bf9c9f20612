# Redis for the compose stack, from the same base image as the worker: redis-server from the
# base when it has it (the debootstrap base does), else installed with apt-get. Context: compose/.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
ARG BASE_IMAGE
LABEL io.sti.compose-image=redis
RUN if ! command -v redis-server >/dev/null 2>&1; then \
        if command -v apt-get >/dev/null 2>&1 \
            && apt-get update \
            && apt-get install -y --no-install-recommends redis-server; then \
            rm -rf /var/lib/apt/lists/*; \
        else \
            echo "ERROR: ${BASE_IMAGE} has no redis-server and apt-get could not install it" >&2; \
            exit 1; \
        fi; \
    fi \
    && mkdir -p /data \
    && chown redis:redis /data \
    && redis-server --version
USER redis
WORKDIR /data
VOLUME /data
EXPOSE 6379
CMD ["redis-server", "--appendonly", "yes", "--maxmemory-policy", "noeviction", \
     "--protected-mode", "no", "--dir", "/data", "--bind", "0.0.0.0"]
