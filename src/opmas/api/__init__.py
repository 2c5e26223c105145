"""OPMAS management plane: agents, principals and JWT authentication, REST + WebSocket API, metrics."""
