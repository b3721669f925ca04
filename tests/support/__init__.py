"""Shared helpers for Meshplane's tests (imported as ``tests.support``)."""
