"""A bad setting or flag stops any command with exit code 2 and one line naming it: no traceback, and no plane
that starts anyway (spinning on a negative heartbeat, or timing every task out)."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from tests.cli.conftest import MESHPLANE, REPO, cli_env


def refusal(*args: str, env: dict[str, str], timeout: float = 30) -> str:
    """The one line `meshplane *args` exits with (code 2) under `env`; a command still running after `timeout`
    (a plane that started) is stopped gracefully and fails the test."""
    process = subprocess.Popen(
        [MESHPLANE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)  # (a graceful stop also ends its nats-server)
        stdout, stderr = process.communicate(timeout=60)
        pytest.fail(f"`meshplane {' '.join(args)}` ran instead of refusing its settings:\n{stdout}{stderr[-2000:]}")
    assert "Traceback" not in stderr, stderr
    assert (process.returncode, stdout) == (2, ""), stderr
    assert stderr.count("\n") == 1 and stderr.startswith("error: "), stderr
    return stderr.removeprefix("error: ").removesuffix("\n")


def up_refuses(tmp_path: Path, *flags: str, **variables: str) -> str:
    args = ["up", "--data-dir", str(tmp_path / "data"), *flags]
    if not any(flag.startswith("--listen") for flag in flags) and "MESHPLANE_LISTEN" not in variables:
        args += ["--listen", "127.0.0.1:0"]  # (were it to start anyway)
    return refusal(*args, env=cli_env(MESHPLANE_GATEWAY="off", **variables))


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"MESHPLANE_SWEEP_INTERVAL": "0"}, "MESHPLANE_SWEEP_INTERVAL must be > 0 (got 0s)"),  # idle plane: 67% CPU
        ({"MESHPLANE_SWEEP_INTERVAL": "-1s"}, "MESHPLANE_SWEEP_INTERVAL must be > 0 (got -1s)"),
        ({"MESHPLANE_DEFAULT_SCHEDULE_TO_START": "-1h"},  # every task TIMED_OUT "within -3600s"
         "MESHPLANE_DEFAULT_SCHEDULE_TO_START must be >= 0 (got -1h; 0 is no limit)"),
        ({"MESHPLANE_DEFAULT_START_TO_CLOSE": "-5m"},
         "MESHPLANE_DEFAULT_START_TO_CLOSE must be >= 0 (got -5m; 0 is no limit)"),
        ({"MESHPLANE_DRAIN_TIMEOUT": "-10s"}, "MESHPLANE_DRAIN_TIMEOUT must be > 0 (got -10s)"),
        ({"MESHPLANE_BATCH_LINGER": "-1s"}, "MESHPLANE_BATCH_LINGER must be >= 0 (got -1s; 0 never waits)"),
        ({"MESHPLANE_DRAIN_TIMEOUT": "1e20"},  # was an OverflowError's traceback
         "MESHPLANE_DRAIN_TIMEOUT: expected a duration of at most 999999999 days, got '1e20'"),
        ({"MESHPLANE_LISTEN": "127.0.0.1:-1"},  # the ready line said port 65535
         "MESHPLANE_LISTEN must be HOST:PORT with a port from 0 to 65535 (port 0 picks one), or unix:PATH "
         "(got '127.0.0.1:-1')"),
        ({"MESHPLANE_HEALTH_LISTEN": "127.0.0.1:70000"},
         "MESHPLANE_HEALTH_LISTEN must be HOST:PORT with a port from 0 to 65535 (port 0 picks one), or unix:PATH "
         "(got '127.0.0.1:70000')"),
        ({"MESHPLANE_METRICS_LISTEN": "nonsense"},  # was a traceback: invalid literal for int()
         "MESHPLANE_METRICS_LISTEN must be HOST:PORT or :PORT with a port from 0 to 65535 (got 'nonsense')"),
        ({"MESHPLANE_METRICS_LISTEN": "127.0.0.1:-1"},
         "MESHPLANE_METRICS_LISTEN must be HOST:PORT or :PORT with a port from 0 to 65535 (got '127.0.0.1:-1')"),
        ({"MESHPLANE_LOG_LEVEL": "LOUD"},  # was a traceback: ValueError: Unknown level: 'LOUD'
         "MESHPLANE_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL (got 'LOUD')"),
        ({"MESHPLANE_LOG_FORMAT": "xml"}, "MESHPLANE_LOG_FORMAT must be text or json (got 'xml')"),
        ({"MESHPLANE_MAX_PAYLOAD_BYTES": "600000000"},  # was grpc's OverflowError traceback
         "MESHPLANE_MAX_PAYLOAD_BYTES must be <= 536870911 (got '600000000')"),
        ({"MESHPLANE_HEARTBEAT_INTERVAL": "30s"},
         "MESHPLANE_LEASE_TIMEOUT must be longer than MESHPLANE_HEARTBEAT_INTERVAL (got 20s and 30s)"),
    ],
)  # fmt: skip
def test_up_refuses_a_bad_setting_in_one_line(tmp_path: Path, variables: dict[str, str], message: str) -> None:
    assert up_refuses(tmp_path, **variables) == message


def test_up_demo_refuses_a_negative_heartbeat_interval(tmp_path: Path) -> None:
    """It started, and spun at 120% CPU."""
    message = up_refuses(tmp_path, "--demo", MESHPLANE_HEARTBEAT_INTERVAL="-5s")
    assert message == "MESHPLANE_HEARTBEAT_INTERVAL must be > 0 (got -5s)"


def test_up_names_a_bad_flag_by_the_flag(tmp_path: Path) -> None:
    message = up_refuses(tmp_path, "--listen", "127.0.0.1:-1", MESHPLANE_LISTEN="127.0.0.1:0")
    assert message == (
        "--listen must be HOST:PORT with a port from 0 to 65535 (port 0 picks one), or unix:PATH (got '127.0.0.1:-1')"
    )


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"MESHPLANE_LEASE_TIMEOUT": "abc"},  # was a pydantic traceback with exit code 1
         "MESHPLANE_LEASE_TIMEOUT: expected a duration like 500ms, 5s, 2m, 1h, 7d or seconds, got 'abc'"),
        ({"MESHPLANE_SWEEP_INTERVAL": "0"}, "MESHPLANE_SWEEP_INTERVAL must be > 0 (got 0s)"),
        ({"MESHPLANE_LOG_LEVEL": "LOUD"},
         "MESHPLANE_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL (got 'LOUD')"),
        ({"MESHPLANE_SWEEP_INTERVAL": "0", "MESHPLANE_ACCEPT_LOOPS": "0"},
         "MESHPLANE_ACCEPT_LOOPS must be >= 1 (got '0'); MESHPLANE_SWEEP_INTERVAL must be > 0 (got 0s)"),
    ],
)  # fmt: skip
def test_db_upgrade_refuses_a_bad_setting_in_one_line(tmp_path: Path, variables: dict[str, str], message: str) -> None:
    """The Helm chart's migration Job runs `meshplane db upgrade` with the plane's settings."""
    assert refusal("db", "upgrade", "--data-dir", str(tmp_path / "data"), env=cli_env(**variables)) == message
    assert not (tmp_path / "data" / "meshplane.db").exists()


def test_db_upgrade_with_good_settings_still_upgrades(tmp_path: Path) -> None:
    env = cli_env(MESHPLANE_SWEEP_INTERVAL="0.05", MESHPLANE_BATCH_LINGER="0", MESHPLANE_LOG_LEVEL="debug")
    result = subprocess.run(
        [MESHPLANE, "db", "upgrade", "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert " at revision " in result.stdout


def test_a_client_command_refuses_a_tls_file_it_cannot_use(tmp_path: Path) -> None:
    """`meshplane task ls` with a missing CA file ended in a traceback (ValueError: cannot read TLS ca_file)."""
    nowhere = "127.0.0.1:1"
    message = refusal("task", "ls", env=cli_env(nowhere, MESHPLANE_TLS_CA_FILE="/nope.pem"))
    assert message == "cannot read MESHPLANE_TLS_CA_FILE /nope.pem: No such file or directory"

    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate\n")
    message = refusal("agents", "ls", env=cli_env(nowhere, MESHPLANE_TLS_CA_FILE=str(not_pem)))
    assert message.startswith(f"MESHPLANE_TLS_CA_FILE {not_pem} holds no usable PEM certificate (")  # not "unreachable"

    message = refusal("task", "ls", env=cli_env(nowhere, MESHPLANE_TLS_CLIENT_CERT_FILE=str(not_pem)))
    assert message == (
        "MESHPLANE_TLS_CLIENT_CERT_FILE and MESHPLANE_TLS_CLIENT_KEY_FILE go together: set both, or neither"
    )
    message = refusal(
        "task", "ls",
        env=cli_env(nowhere, MESHPLANE_TLS_CLIENT_CERT_FILE=str(not_pem), MESHPLANE_TLS_CLIENT_KEY_FILE="/nokey.pem"),
    )  # fmt: skip
    assert message == "cannot read MESHPLANE_TLS_CLIENT_KEY_FILE /nokey.pem: No such file or directory"


def test_agent_run_refuses_a_bad_log_level(tmp_path: Path) -> None:
    """`meshplane agent run` reads MESHPLANE_LOG_LEVEL itself."""
    message = refusal("agent", "run", "no_such_module:agent", env=cli_env("127.0.0.1:1", MESHPLANE_LOG_LEVEL="LOUD"))
    assert message == "MESHPLANE_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL (got 'LOUD')"


def test_agent_run_refuses_a_tls_file_it_cannot_use() -> None:
    message = refusal(
        "agent", "run", "examples/python/minimal_agent.py:agent",
        env=cli_env("127.0.0.1:1", MESHPLANE_TLS_CA_FILE="/nope.pem"),
    )  # fmt: skip
    assert message == "cannot read MESHPLANE_TLS_CA_FILE /nope.pem: No such file or directory"
