"""gRPC calls handled, per method and status code, and unary calls' handling time per method.

The error interceptor (api.errors) is the one place every call passes through: it takes one `MethodCalls` per
method when it wraps that method's handler (once, not per call), and tells it how each call ended. Nothing
here is a metric object; the collector reads these at scrape time (see plane_metrics).
"""

from __future__ import annotations

from controlplane.observability.histogram import CALL_BUCKETS, Histogram, HistogramSnapshot


class MethodCalls:
    """One method's calls: how many ended with each status code, and (unary methods) how long they took."""

    __slots__ = ("codes", "seconds")

    def __init__(self, *, timed: bool) -> None:
        self.codes: dict[str, int] = {}  # status code name ("OK", "INVALID_ARGUMENT", ...) -> calls
        self.seconds = Histogram(CALL_BUCKETS) if timed else None

    def handled(self, code: str, seconds: float) -> None:
        """A unary call ended with `code` after `seconds`."""
        self.codes[code] = self.codes.get(code, 0) + 1
        if self.seconds is not None:
            self.seconds.observe(seconds)

    def ended(self, code: str) -> None:
        """A stream ended with `code` (a stream's length says nothing about the server's speed: not timed)."""
        self.codes[code] = self.codes.get(code, 0) + 1


class GrpcCalls:
    """Every method's calls on this replica (shared by its listeners' servers)."""

    def __init__(self) -> None:
        self._methods: dict[str, MethodCalls] = {}

    def method(self, path: str, *, timed: bool) -> MethodCalls:
        """The calls of the method at `path` (`/package.Service/Method`), named without the leading slash."""
        name = path.lstrip("/")
        calls = self._methods.get(name)
        if calls is None:
            calls = self._methods[name] = MethodCalls(timed=timed)
        return calls

    def handled_total(self) -> dict[tuple[str, str], int]:
        """(method, code) -> calls ended with that code."""
        return {(name, code): n for name, calls in list(self._methods.items()) for code, n in dict(calls.codes).items()}

    def handling_seconds(self) -> dict[tuple[str], HistogramSnapshot]:
        """(method,) -> its unary calls' handling times."""
        return {
            (name,): calls.seconds.snapshot()
            for name, calls in list(self._methods.items())
            if calls.seconds is not None
        }
