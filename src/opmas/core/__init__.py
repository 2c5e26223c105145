"""OPMAS engine: event access, rules, condition evaluation, windowed state, processor, findings.

The engine does no I/O and imports no connector: it takes plain data (events as
dicts) and returns plain data (findings, state snapshots).
"""
