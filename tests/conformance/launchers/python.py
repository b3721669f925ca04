"""The Python SDK's conformance agent launcher .

Nothing to build: the agent is tests/conformance/agents/python/agent.py, run with this interpreter.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests.conformance.launchers import agent_flags

LANGUAGE = "python"

AGENT = Path(__file__).resolve().parents[1] / "agents" / "python" / "agent.py"


def build() -> None:
    """Nothing to build (the SDK is installed in this interpreter's environment)."""


def command(target: str, name: str, instance_id: str, max_concurrency: int, token: str | None = None) -> list[str]:
    return [sys.executable, str(AGENT), *agent_flags(target, name, instance_id, max_concurrency, token)]
