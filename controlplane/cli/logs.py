"""Logging for the CLI: readable text by default, one JSON object per line with MESHPLANE_LOG_FORMAT=json."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from controlplane.cli.common import CliError

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")  # as controlplane.settings.LOG_LEVELS
LOG_FORMATS = ("text", "json")

# Attributes every LogRecord has; anything else on a record came in through `extra=` (task_id, ...).
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", ...extra fields}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_extras(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message key=value ...``"""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = _extras(record)
        if extras:
            text += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return text


def configure_logging(level: str = "INFO", log_format: str = "text") -> None:
    """Send every log record to stderr in the chosen format (replacing earlier handlers). `level` and `log_format`
    are what MESHPLANE_LOG_LEVEL and MESHPLANE_LOG_FORMAT say (any case); others are a CliError naming them."""
    chosen_level, chosen_format = str(level).strip().upper(), str(log_format).strip().lower()
    if chosen_level not in LOG_LEVELS:
        raise CliError(f"MESHPLANE_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)} (got {level!r})")
    if chosen_format not in LOG_FORMATS:
        raise CliError(f"MESHPLANE_LOG_FORMAT must be text or json (got {log_format!r})")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if chosen_format == "json" else TextFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(chosen_level)
