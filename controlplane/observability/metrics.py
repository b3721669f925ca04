"""Prometheus metrics, collected at scrape time from the components' own counters.

Nothing on the hot path touches a metric object: each scrape reads plain integers the components
keep anyway. Each ControlPlane has its own registry, so several can run in one process (tests).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from threading import Thread
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)


@dataclass
class Reading:
    name: str
    help: str
    kind: str  # "counter" or "gauge"
    read: Callable[[], float | dict[str, float]]
    label: str = ""


class LiveCollector(Collector):
    def __init__(self, readings: list[Reading]) -> None:
        self._readings = readings

    def collect(self) -> Iterator[Metric]:
        for reading in self._readings:
            value = reading.read()
            family_type = CounterMetricFamily if reading.kind == "counter" else GaugeMetricFamily
            if isinstance(value, dict):
                family = family_type(reading.name, reading.help, labels=[reading.label])
                for label_value, number in sorted(value.items()):
                    family.add_metric([label_value], number)
            else:
                family = family_type(reading.name, reading.help, value=value)
            yield family


class MetricsServer:
    """Serves /metrics for one registry on `host:port` (port 0 picks one)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._server: WSGIServer | None = None
        self._thread: Thread | None = None
        self.address = ""

    def start(self, listen: str) -> None:
        host, _, port = listen.rpartition(":")
        self._server, self._thread = start_http_server(int(port), addr=host or "0.0.0.0", registry=self.registry)
        self.address = f"{host or '0.0.0.0'}:{self._server.server_port}"
        logger.info("Prometheus metrics on http://%s/metrics", self.address)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def render(self) -> bytes:
        return generate_latest(self.registry)


def build_registry(readings: list[Reading], *, version: str = "") -> CollectorRegistry:
    """The readings, with the process's own metrics (process_*: memory, CPU, open files; python_info) and,
    given a version, meshplane_build_info."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(LiveCollector(readings))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    if version:
        info = Info("meshplane_build", "The running control plane's version.", registry=registry)
        info.info({"version": version})
    return registry


def counter(name: str, help_text: str, read: Callable[[], Any], label: str = "") -> Reading:
    return Reading(name, help_text, "counter", read, label)


def gauge(name: str, help_text: str, read: Callable[[], Any], label: str = "") -> Reading:
    return Reading(name, help_text, "gauge", read, label)
