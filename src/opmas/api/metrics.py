"""The API's own Prometheus metrics (the pipeline's are in ``opmas.metrics``; all share the default registry)."""
from __future__ import annotations

from prometheus_client import Counter, Histogram

API_REQUESTS = Counter("opmas_api_requests", "API requests answered", ["method", "route", "status"])
API_LATENCY = Histogram("opmas_api_request_seconds", "API request handling time", ["route"],
                        buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10))
AGENT_HEARTBEATS = Counter("opmas_agent_heartbeats", "Agent heartbeats received", ["outcome"])
