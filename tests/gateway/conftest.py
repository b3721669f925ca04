"""The REST gateway's end-to-end tests use `gateway_binary` from tests/conftest.py."""
