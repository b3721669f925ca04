"""Placing queued tasks on live sessions, and the clock-driven sweeps."""
