# otelproc: OTLP in (4317 gRPC, 4318 HTTP), metrics on 8888, optional ClickHouse query endpoint on 8123.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    NUMBA_CACHE_DIR=/var/cache/otelproc/numba \
    PIP_NO_CACHE_DIR=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY otelproc ./otelproc
COPY config ./config
COPY grafana ./grafana
RUN pip install -e . && mkdir -p /var/cache/otelproc/numba /var/lib/otelproc

# embedded store (chdb://) default location when run with config/otelproc.yaml
ENV OTELPROC_STORE=chdb:///var/lib/otelproc/data
VOLUME ["/var/lib/otelproc"]
EXPOSE 4317 4318 8888 8123

ENTRYPOINT ["otelproc"]
CMD ["serve", "--config", "/app/config/otelproc.yaml"]
