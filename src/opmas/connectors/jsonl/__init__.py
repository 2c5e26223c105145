"""The JSON-lines file sink: ``--sink file:PATH`` appends each announced finding to PATH."""
from opmas.connectors.jsonl.sink import JsonLinesSink, build

__all__ = ["JsonLinesSink", "build"]
