"""The TypeScript SDK's conformance agent: tests/conformance/agents/typescript, built once per session.

``tsc -b`` (the repo's pinned TypeScript from the root node_modules) builds the SDK (sdk/typescript,
a project reference) and then the agent, each into its own gitignored ``dist/``. The agent imports
the SDK as the package ``@meshplane/sdk``, linked into the root node_modules by the npm workspace
(``make node``).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conformance.launchers import agent_flags
from tests.support.toolchain import require_tool, toolchain_missing

LANGUAGE = "typescript"

ROOT = Path(__file__).resolve().parents[3]
AGENT_DIR = ROOT / "tests" / "conformance" / "agents" / "typescript"
TSC = ROOT / "node_modules" / "typescript" / "bin" / "tsc"
SDK_LINK = ROOT / "node_modules" / "@meshplane" / "sdk"
BUILD_TIMEOUT_S = 300

_built: dict[str, str] = {}  # "node": the Node.js executable, once build() succeeded


def build() -> None:
    node = require_tool("node", "the TypeScript conformance agent runs on Node.js (install Node.js >= 18)")
    if not TSC.exists() or not SDK_LINK.exists():
        toolchain_missing(
            "the npm workspace is not installed (node_modules/typescript, node_modules/@meshplane/sdk): "
            "run `make node` (npm install at the repo root)"
        )
    result = subprocess.run(
        [node, str(TSC), "-b", str(AGENT_DIR)],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
    )
    if result.returncode != 0:
        raise RuntimeError(f"tsc -b of the TypeScript conformance agent failed:\n{result.stdout}\n{result.stderr}")
    _built["node"] = node


def command(target: str, name: str, instance_id: str, max_concurrency: int, token: str | None = None) -> list[str]:
    node = _built.get("node")
    if node is None:
        raise RuntimeError("build() has not run")
    return [node, str(AGENT_DIR / "dist" / "agent.js"), *agent_flags(target, name, instance_id, max_concurrency, token)]
