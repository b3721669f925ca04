"""Metrics, tracing and logging helpers."""
