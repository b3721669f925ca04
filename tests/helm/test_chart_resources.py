"""The chart's default container resources: enough memory for the load the benchmark measured, and the
README's values table saying what the chart renders."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.helm.kube import CHART, container, render

# The control plane's RSS with 10,000 idle agent sessions on one plane (README, Performance: 436 MB).
IDLE_SESSIONS_RSS_BYTES = 436 * 10**6
# The limit leaves as much again on top of that, for the GC, bursts of submits and payloads in flight.
HEADROOM_FACTOR = 2

# Binary and decimal suffixes of a Kubernetes quantity (memory is never given in milli-units here).
_QUANTITY_FACTORS = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}

# README row → (workload kind, workload name, container name) of the resources it documents.
RESOURCE_ROWS = {
    "controlPlane.resources": ("Deployment", "meshplane", "control-plane"),
    "gateway.resources": ("Deployment", "meshplane-gateway", "gateway"),
    "migrations.resources": ("Job", "meshplane-migrate", "migrate"),
}


def memory_bytes(quantity: str) -> int:
    """A memory quantity ("512Mi", "1Gi", "800M", "1073741824") in bytes."""
    match = re.fullmatch(r"(\d+)([kMGT]i?|Ki)?", quantity)
    assert match, f"not a memory quantity this test reads: {quantity!r}"
    return int(match[1]) * _QUANTITY_FACTORS[match[2] or ""]


def documented_default(key: str) -> Any:
    """The default the chart README's values table gives `key`, parsed as the JSON it is written in."""
    readme = (CHART / "README.md").read_text()
    match = re.search(r"^\| `" + re.escape(key) + r"` \| `(.*?)` \|", readme, re.M)
    assert match, f"README.md has no row for {key}"
    return json.loads(match[1])


def test_control_plane_memory_limit_covers_idle_sessions_with_headroom(helm: Path) -> None:
    plane = container(render(helm).one("Deployment", "meshplane"), "control-plane")
    limit = memory_bytes(plane["resources"]["limits"]["memory"])
    assert limit >= HEADROOM_FACTOR * IDLE_SESSIONS_RSS_BYTES, (
        f"controlPlane.resources.limits.memory {plane['resources']['limits']['memory']} leaves too little room "
        f"over the {IDLE_SESSIONS_RSS_BYTES // 10**6} MB measured with 10,000 idle sessions"
    )
    assert limit > memory_bytes(plane["resources"]["requests"]["memory"])


def test_readme_documents_the_rendered_resources(helm: Path) -> None:
    manifests = render(helm)
    for key, (kind, workload, name) in RESOURCE_ROWS.items():
        rendered = container(manifests.one(kind, workload), name)["resources"]
        assert documented_default(key) == rendered, key
