"""Tuning, measurement, logs, dispatch at inference, benchmarks and the CLI."""
