"""Settings: the duration forms MESHPLANE_* variables take, and what a bad one is told."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pydantic
import pytest

from controlplane.settings import Settings
from tests.cli.conftest import cli_env, run_cli


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500ms", timedelta(milliseconds=500)),
        ("5s", timedelta(seconds=5)),
        ("2m", timedelta(minutes=2)),
        ("1h", timedelta(hours=1)),
        ("7d", timedelta(days=7)),
        ("1.5", timedelta(seconds=1.5)),
        (" 5 S ", timedelta(seconds=5)),
        ("PT5S", timedelta(seconds=5)),
    ],
)
def test_durations_take_units_seconds_or_iso_8601(text: str, expected: timedelta) -> None:
    assert Settings(drain_timeout=text).drain_timeout == expected


@pytest.mark.parametrize("text", ["5x", "abc", "ms", "5sec"])
def test_a_duration_it_cannot_read_is_named_with_the_forms_it_takes(text: str) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        Settings(drain_timeout=text)
    assert f"expected a duration like 500ms, 5s, 2m, 1h, 7d or seconds, got {text!r}" in str(caught.value)


def test_up_says_which_setting_is_not_a_duration_in_one_line(tmp_path: Path) -> None:
    env = cli_env(MESHPLANE_DRAIN_TIMEOUT="5x", MESHPLANE_GATEWAY="off")
    result = run_cli("up", "--data-dir", str(tmp_path / "data"), target=None, env=env)
    assert result.returncode == 2
    assert result.stderr == (
        "error: invalid settings: drain_timeout: Value error, "
        "expected a duration like 500ms, 5s, 2m, 1h, 7d or seconds, got '5x'\n"
    )


def test_a_port_out_of_range_is_refused_not_wrapped(tmp_path: Path) -> None:
    """grpc took 127.0.0.1:99999 as port 34463 (99999 mod 65536) and the plane said it was ready there."""
    for name in ("listen", "metrics_listen", "health_listen"):
        with pytest.raises(pydantic.ValidationError) as caught:
            Settings(**{name: "127.0.0.1:99999"})
        assert "port 99999 of '127.0.0.1:99999' is out of range (0-65535)" in str(caught.value)
    assert Settings(listen="[::1]:65535", metrics_listen="unix:/tmp/m.sock").listen == "[::1]:65535"
    result = run_cli(
        "up", "--data-dir", str(tmp_path / "data"), "--listen", "127.0.0.1:99999", target=None,
        env=cli_env(MESHPLANE_GATEWAY="off"),
    )  # fmt: skip
    assert (result.returncode, result.stderr) == (
        2,
        "error: invalid settings: listen: Value error, port 99999 of '127.0.0.1:99999' is out of range (0-65535)\n",
    )
