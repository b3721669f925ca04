"""The TypeScript SDK (sdk/typescript) builds with the repo's pinned TypeScript and passes its unit tests.

The SDK's own ``node:test`` unit tests cover its pure parts (payloads, framing, errors, the runtime's
protocol duties frame by frame); its behaviour against a real control plane is proven by the
conformance suite (tests/conformance, language ``typescript``). A missing Node.js or npm workspace
skips these tests locally and fails them under ``CI=true``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.toolchain import require_tool, toolchain_missing

ROOT = Path(__file__).resolve().parents[2]
SDK = ROOT / "sdk" / "typescript"
EXAMPLE = ROOT / "examples" / "typescript"
TSC = ROOT / "node_modules" / "typescript" / "bin" / "tsc"
SDK_LINK = ROOT / "node_modules" / "@meshplane" / "sdk"
TIMEOUT_S = 300


def _node() -> str:
    node = require_tool("node", "the TypeScript SDK builds and runs on Node.js (install Node.js >= 18)")
    if not TSC.exists() or not SDK_LINK.exists():
        toolchain_missing(
            "the npm workspace is not installed (node_modules/typescript, node_modules/@meshplane/sdk): "
            "run `make node` (npm install at the repo root)"
        )
    return node


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=TIMEOUT_S)


@pytest.mark.timeout(TIMEOUT_S)
def test_sdk_and_example_build_with_declarations() -> None:
    node = _node()
    # `tsc -b` on the example builds the SDK first (a project reference), then the example.
    result = _run([node, str(TSC), "-b", str(EXAMPLE)])
    assert result.returncode == 0, f"tsc -b examples/typescript failed:\n{result.stdout}\n{result.stderr}"
    out = SDK / "dist" / "sdk" / "typescript" / "src"
    for name in ("index.js", "index.d.ts", "agent.d.ts", "client.d.ts"):
        assert (out / name).is_file(), f"{name} was not emitted into {out}"
    assert (EXAMPLE / "dist" / "agent.js").is_file()

    # The built package loads through its package name and exports what the README documents.
    script = (
        "const sdk = require('@meshplane/sdk');"
        "for (const name of ['Agent', 'MeshClient', 'TaskError', 'NonRetryableError', 'VersionConflictError'])"
        "  if (typeof sdk[name] !== 'function') throw new Error(name + ' is not exported');"
        "process.stdout.write(sdk.SDK_VERSION);"
    )
    loaded = _run([node, "-e", script])
    assert loaded.returncode == 0, f"require('@meshplane/sdk') failed:\n{loaded.stdout}\n{loaded.stderr}"
    assert loaded.stdout == "0.1.0"


@pytest.mark.timeout(TIMEOUT_S)
def test_sdk_unit_tests_pass() -> None:
    node = _node()
    # Builds the SDK (reused when up to date), then the tests, into dist/sdk/typescript/test/.
    result = _run([node, str(TSC), "-b", str(SDK / "tsconfig.test.json")])
    assert result.returncode == 0, f"tsc -b sdk/typescript/tsconfig.test.json failed:\n{result.stdout}\n{result.stderr}"
    tests = sorted((SDK / "dist" / "sdk" / "typescript" / "test").glob("*.test.js"))
    assert tests, "no compiled unit tests found"
    run = _run([node, "--test", *map(str, tests)])
    output = f"{run.stdout}\n{run.stderr}"
    assert run.returncode == 0, f"node --test failed:\n{output[-20000:]}"
    assert "# fail 0" in run.stdout, output[-20000:]
