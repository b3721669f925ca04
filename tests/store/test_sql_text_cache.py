"""The hot path's SQL text is cached by the shape of a batch; the shapes keep coming (they depend on the data),
so the cache is bounded."""

from __future__ import annotations

import pytest

from controlplane.store import bulk


def test_the_sql_text_cache_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bulk, "_SQL_CACHE", {})
    monkeypatch.setattr(bulk, "_SQL_CACHE_MAX", 8)
    built: list[int] = []
    for shape in range(50):
        assert bulk._cached(("shape", shape), lambda s=shape: built.append(s) or f"SELECT {s}") == f"SELECT {shape}"
        assert len(bulk._SQL_CACHE) <= 8
    assert built == list(range(50)), "each new shape is built once"
    assert bulk._cached(("shape", 49), lambda: "rebuilt") == "SELECT 49", "a recent shape is still cached"
