# otelproc from its wheel: OTLP in (4317 gRPC, 4318 HTTP), metrics on 8888, optional ClickHouse query
# endpoint on 8123. Without arguments it serves the embedded default config (the package's copy of
# config/otelproc.yaml) with its data under $OTELPROC_HOME.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY otelproc ./otelproc
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    NUMBA_CACHE_DIR=/var/cache/otelproc/numba \
    OTELPROC_HOME=/var/lib/otelproc \
    OTELPROC_METRICS_ENDPOINT=0.0.0.0:8888
COPY --from=build /wheels /wheels
# the kernels are compiled once here, so a container serves at once
RUN pip install /wheels/otelproc-*.whl && rm -rf /wheels \
    && mkdir -p "$NUMBA_CACHE_DIR" "$OTELPROC_HOME" && otelproc warmup
# example configs (docker-compose.yml runs config/clickhouse-server.yaml)
COPY config /app/config
WORKDIR /var/lib/otelproc
VOLUME ["/var/lib/otelproc"]
EXPOSE 4317 4318 8888 8123

ENTRYPOINT ["otelproc"]
CMD ["serve"]
