"""Benchmarks that print figures: event generator (generate), rule engine (bench_rules), others per component."""
