"""OPMAS command line, configuration and runtimes (wiring engine and connectors)."""
