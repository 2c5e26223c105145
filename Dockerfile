# OPMAS engine image. Installed in place (editable) so rules/, schemas/ and samples/ ship with it.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 OPMAS_DATA_DIR=/data
WORKDIR /app
COPY pyproject.toml README.md ./
COPY opmas ./opmas
COPY engine ./engine
COPY connectors ./connectors
COPY management ./management
COPY agents ./agents
COPY rules ./rules
COPY schemas ./schemas
COPY samples ./samples
COPY benchmarks ./benchmarks
RUN pip install -e . && useradd --create-home --uid 10001 opmas && mkdir -p /data && chown opmas /data
USER opmas
VOLUME ["/data"]
# Without NATS_URL / OPMAS_DB_URL / OPMAS_CLICKHOUSE_URL it starts embedded servers under /data.
CMD ["opmas", "up"]
