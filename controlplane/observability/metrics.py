"""Prometheus metrics, collected at scrape time from the components' own counters.

Nothing on the hot path touches a metric object: each scrape reads plain integers the components
keep anyway, and latency histograms kept as bucket counts (observability.histogram). Each ControlPlane
has its own registry, so several can run in one process (tests).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
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
from prometheus_client import utils as prometheus_utils
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from controlplane.observability.histogram import HistogramSnapshot

logger = logging.getLogger(__name__)

# How Prometheus writes a bucket's bound (`le`); unannotated in prometheus_client.
_bound_text: Callable[[float], str] = prometheus_utils.floatToGoString


Value = float | HistogramSnapshot
LabelValues = str | tuple[str, ...]


@dataclass
class Reading:
    """One metric family, read at scrape time: a number (or a histogram snapshot), or one per label value.

    With labels, `read` returns a dict keyed by the label's value, or by a tuple of values for several
    labels (`label` then a tuple of names, in the same order).
    """

    name: str
    help: str
    kind: str  # "counter", "gauge" or "histogram"
    read: Callable[[], Value | Mapping[Any, Value]]
    label: LabelValues = ""

    @property
    def label_names(self) -> list[str]:
        return [self.label] if isinstance(self.label, str) else list(self.label)


_FAMILIES = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily}


class LiveCollector(Collector):
    def __init__(self, readings: list[Reading]) -> None:
        self._readings = readings

    def collect(self) -> Iterator[Metric]:
        for reading in self._readings:
            value = reading.read()
            if reading.kind == "histogram":
                yield _histogram_family(reading, value)
                continue
            family_type = _FAMILIES[reading.kind]
            if isinstance(value, Mapping):
                family = family_type(reading.name, reading.help, labels=reading.label_names)
                for label_values, number in sorted(value.items()):
                    family.add_metric(_as_list(label_values), number)
            else:
                family = family_type(reading.name, reading.help, value=value)
            yield family


def _as_list(label_values: LabelValues) -> list[str]:
    return [label_values] if isinstance(label_values, str) else list(label_values)


def _histogram_family(reading: Reading, value: Value | Mapping[Any, Value]) -> HistogramMetricFamily:
    if isinstance(value, Mapping):
        family = HistogramMetricFamily(reading.name, reading.help, labels=reading.label_names)
        for label_values, snapshot in sorted(value.items(), key=lambda item: item[0]):
            _add_histogram(family, _as_list(label_values), snapshot)
        return family
    family = HistogramMetricFamily(reading.name, reading.help)
    _add_histogram(family, [], value)
    return family


def _add_histogram(family: HistogramMetricFamily, label_values: list[str], snapshot: Value) -> None:
    if not isinstance(snapshot, HistogramSnapshot):
        raise TypeError(f"{family.name}: a histogram reading must give HistogramSnapshots, not {snapshot!r}")
    bounds = [*(_bound_text(bound) for bound in snapshot.bounds), "+Inf"]
    family.add_metric(label_values, list(zip(bounds, snapshot.cumulative, strict=True)), snapshot.total)


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


def counter(name: str, help_text: str, read: Callable[[], Any], label: LabelValues = "") -> Reading:
    return Reading(name, help_text, "counter", read, label)


def gauge(name: str, help_text: str, read: Callable[[], Any], label: LabelValues = "") -> Reading:
    return Reading(name, help_text, "gauge", read, label)


def histogram(name: str, help_text: str, read: Callable[[], Any], label: LabelValues = "") -> Reading:
    """`read` returns a HistogramSnapshot, or a dict of them by label value."""
    return Reading(name, help_text, "histogram", read, label)
