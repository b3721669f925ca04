"""A MESHPLANE_* variable nothing reads (a misspelled setting) is one warning when the plane's settings are read
(`meshplane up`, `meshplane db upgrade`), naming the setting it probably meant; what other Meshplane programs and
Kubernetes' service links set is not."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.conftest import cli_env, run_cli, start_mesh

pytestmark = pytest.mark.timeout(120)

MISSPELLED = {"MESHPLANE_LEASE_TIMOUT": "5s"}
WARNING = "unknown variable MESHPLANE_LEASE_TIMOUT ignored (did you mean MESHPLANE_LEASE_TIMEOUT?)"
# What a plane's Pod may hold besides its settings: a client's variables, the gateway's, Kubernetes' service links.
LEGITIMATE = {
    "MESHPLANE_TOKEN": "t0ken",
    "MESHPLANE_GATEWAY_LOG_LEVEL": "info",
    "MESHPLANE_PORT": "tcp://10.0.0.7:50051",
    "MESHPLANE_PORT_50051_TCP_ADDR": "10.0.0.7",
    "MESHPLANE_METRICS_SERVICE_HOST": "10.0.0.8",
}


def _warnings(log: str) -> list[str]:
    return [line.split(" ", 3)[-1] for line in log.splitlines() if " WARNING " in line]


def test_up_warns_once_about_a_misspelled_setting_and_serves(tmp_path: Path) -> None:
    env = cli_env(MESHPLANE_GATEWAY_BIN=str(tmp_path / "no-gateway"), **MISSPELLED, **LEGITIMATE)
    mesh = start_mesh(tmp_path / "data", env=env, demo=False)
    try:
        assert mesh.cli("agents", "ls").stdout.strip() == "no agents"
    finally:
        assert mesh.stop() == 0
    assert _warnings(mesh.log.read_text()) == [f"controlplane.settings: {WARNING}"]


def test_db_upgrade_warns_about_a_misspelled_setting_and_upgrades(tmp_path: Path) -> None:
    """The chart's migration Job: a misspelled MESHPLANE_DATABASE_URL would migrate a default SQLite file."""
    env = cli_env(MESHPLANE_DATABASE_UR="postgresql+asyncpg://mesh@db/mesh", **LEGITIMATE)
    result = run_cli("db", "upgrade", "--data-dir", str(tmp_path / "data"), target=None, env=env)
    assert result.returncode == 0, result.stderr
    assert " at revision " in result.stdout
    assert _warnings(result.stderr) == [
        "controlplane.settings: unknown variable MESHPLANE_DATABASE_UR ignored (did you mean MESHPLANE_DATABASE_URL?)"
    ]


def test_a_client_command_does_not_warn(tmp_path: Path) -> None:
    """Client commands do not read the plane's settings: a plane's variables in their environment are no mistake."""
    result = run_cli("task", "ls", target="127.0.0.1:1", env=cli_env("127.0.0.1:1", **MISSPELLED))
    assert result.stderr == "error: control plane unreachable at 127.0.0.1:1\n"
