# OPMAS engine image: the package installed from its wheel; the shipped rules are also at /app/rules.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 OPMAS_DATA_DIR=/data
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
COPY samples ./samples
RUN pip install . \
    && ln -s "$(python -c 'from opmas.paths import RULES_DIR; print(RULES_DIR)')" /app/rules \
    && useradd --create-home --uid 10001 opmas && mkdir -p /data && chown opmas /data
USER opmas
VOLUME ["/data"]
# Without NATS_URL / OPMAS_DB_URL / OPMAS_CLICKHOUSE_URL it starts embedded servers under /data.
CMD ["opmas", "up"]
