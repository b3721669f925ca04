"""How the CLI prints: resources as protobuf JSON (``--output json``) or as short text for people."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from agent_runtime import ErrorInfo, TaskEvent, TaskInfo


def value_text(value: Any) -> str:
    """A payload value on one line: JSON, or a note for binary data."""
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    return json.dumps(value, ensure_ascii=False)


def out(text: str = "", stream: TextIO | None = None) -> None:
    print(text, file=stream or sys.stdout, flush=True)


def error_text(error: ErrorInfo | None) -> str:
    if error is None:
        return ""
    return f"{error.code}: {error.message}" if error.message else error.code


def age(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    seconds = max(0.0, (datetime.now(UTC) - moment).total_seconds())
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"


def table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip()
        for row in [headers, *rows]
    ]
    return "\n".join(lines)


def task_text(task: TaskInfo) -> str:
    fields: list[tuple[str, str]] = [
        ("id", task.id),
        ("capability", task.capability),
        ("state", task.state.value),
        ("attempt", f"{task.attempt}/{task.max_attempts}"),
    ]
    if task.state.value in ("ASSIGNED", "RUNNING") or task.progress:
        progress = f"{task.progress * 100:.0f}%"
        fields.append(("progress", f"{progress} {task.progress_message}".strip()))
    fields.append(("input", value_text(task.input)))
    if task.output is not None or task.state.value == "SUCCEEDED":
        fields.append(("output", value_text(task.output)))
    if task.error is not None:
        fields.append(("error", error_text(task.error)))
    if task.cancel_reason:
        fields.append(("cancel reason", task.cancel_reason))
    if task.correlation_id:
        fields.append(("correlation id", task.correlation_id))
    if task.resubmitted_from:
        fields.append(("resubmitted from", task.resubmitted_from))
    fields.append(("created", task.create_time.isoformat() if task.create_time else "-"))
    if task.end_time:
        fields.append(("ended", task.end_time.isoformat()))
    width = max(len(name) for name, _ in fields) + 1
    lines = [f"{name + ':':<{width}} {value}" for name, value in fields]
    for attempt in task.attempts:
        took = ""
        if attempt.assign_time and attempt.end_time:
            took = f" {(attempt.end_time - attempt.assign_time).total_seconds():.3f}s"
        error = f" {error_text(attempt.error)}" if attempt.error else ""
        lines.append(
            f"  attempt {attempt.attempt}: {attempt.outcome} on {attempt.agent_name}/{attempt.agent_instance_id}"
            f"{took}{error}"
        )
    return "\n".join(lines)


def event_text(event: TaskEvent) -> str:
    parts = [f"#{event.sequence}", event.type.value, f"state={event.state.value}"]
    if event.attempt:
        parts.append(f"attempt={event.attempt}")
    if event.type.value == "PROGRESS":
        parts.append(f"progress={event.progress * 100:.0f}%")
    if event.message:
        parts.append(event.message)
    if event.error is not None:
        parts.append(f"error={error_text(event.error)}")
    if event.type.value == "SUCCEEDED":
        parts.append(f"output={value_text(event.output)}")
    return " ".join(parts)


def progress_bar(fraction: float, width: int = 30) -> str:
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "[" + "#" * filled + "-" * (width - filled) + f"] {fraction * 100:3.0f}%"
