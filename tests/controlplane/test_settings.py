"""Settings: the duration forms MESHPLANE_* variables take, the bounds of each setting, and what a bad one is told."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pydantic
import pytest

from controlplane.cli import logs
from controlplane.cli.common import CliError
from controlplane.settings import (
    LOG_LEVELS,
    LOOP_INTERVALS,
    ZERO_MEANS,
    LogFormat,
    Settings,
    describe_errors,
    unknown_variable_warnings,
    variable,
)
from tests.cli.conftest import REPO, cli_env, run_cli
from tests.support.plane import plane_settings


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
        "error: MESHPLANE_DRAIN_TIMEOUT: expected a duration like 500ms, 5s, 2m, 1h, 7d or seconds, got '5x'\n"
    )


def test_a_port_out_of_range_is_refused_not_wrapped(tmp_path: Path) -> None:
    """grpc took 127.0.0.1:99999 as port 34463 (99999 mod 65536) and the plane said it was ready there."""
    for name in ("listen", "metrics_listen", "health_listen"):
        with pytest.raises(pydantic.ValidationError) as caught:
            Settings(**{name: "127.0.0.1:99999"})
        assert f"{name} must be HOST:PORT" in str(caught.value)
        assert "a port from 0 to 65535" in str(caught.value)
    assert Settings(listen="[::1]:65535", health_listen="unix:/tmp/h.sock").listen == "[::1]:65535"
    result = run_cli(
        "up", "--data-dir", str(tmp_path / "data"), "--listen", "127.0.0.1:99999", target=None,
        env=cli_env(MESHPLANE_GATEWAY="off"),
    )  # fmt: skip
    assert (result.returncode, result.stderr) == (
        2,
        "error: --listen must be HOST:PORT with a port from 0 to 65535 (port 0 picks one), or unix:PATH "
        "(got '127.0.0.1:99999')\n",
    )


def refused(**values: Any) -> str:
    """What Settings(**values) is told, as the CLI says it: on one line, naming MESHPLANE_* variables."""
    with pytest.raises(pydantic.ValidationError) as caught:
        Settings(**values)
    message = describe_errors(caught.value)
    assert "\n" not in message
    return message


def test_python_callers_are_told_the_field_names() -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        Settings(sweep_interval="0")
    assert "sweep_interval must be > 0 (got 0s)" in str(caught.value)
    assert "MESHPLANE_" not in str(caught.value)
    with pytest.raises(pydantic.ValidationError, match=r"lease_timeout must be longer than heartbeat_interval"):
        Settings(heartbeat_interval="30s")


DURATIONS = sorted(name for name, field in Settings.model_fields.items() if field.annotation is timedelta)


def test_every_duration_setting_has_its_bounds() -> None:
    """No duration is negative; only those whose 0 means something take 0 (the others drive a loop or a
    deadline: 0 would spin or end everything at once)."""
    more_than_zero = {"heartbeat_interval", "lease_timeout", "drain_timeout", "sweep_interval", "housekeeping_interval"}
    assert set(DURATIONS) == more_than_zero | set(ZERO_MEANS)
    assert len(DURATIONS) == 16
    for name in DURATIONS:
        variable_name = variable(name)
        if name in ZERO_MEANS:
            assert refused(**{name: "-1s"}) == f"{variable_name} must be >= 0 (got -1s; {ZERO_MEANS[name]})"
            zero = Settings(**{"default_initial_backoff": "0", name: "0"})  # (max backoff >= initial backoff)
            assert getattr(zero, name) == timedelta(0)
        else:
            assert refused(**{name: "-1s"}).startswith(f"{variable_name} must be > 0 (got -1s)")
            assert refused(**{name: "0"}).startswith(f"{variable_name} must be > 0 (got 0s)")
        if name in LOOP_INTERVALS:
            assert refused(**{name: "9ms"}).startswith(f"{variable_name} must be at least 10ms")
            assert getattr(Settings(**{name: "10ms"}), name) == timedelta(milliseconds=10)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"heartbeat_interval": "-5s"}, "MESHPLANE_HEARTBEAT_INTERVAL must be > 0 (got -5s)"),
        ({"heartbeat_interval": "0"}, "MESHPLANE_HEARTBEAT_INTERVAL must be > 0 (got 0s)"),
        ({"sweep_interval": "0"}, "MESHPLANE_SWEEP_INTERVAL must be > 0 (got 0s)"),
        ({"sweep_interval": "-1s"}, "MESHPLANE_SWEEP_INTERVAL must be > 0 (got -1s)"),
        ({"housekeeping_interval": "0"}, "MESHPLANE_HOUSEKEEPING_INTERVAL must be > 0 (got 0s)"),
        ({"lease_timeout": "0", "heartbeat_interval": "1s"}, "MESHPLANE_LEASE_TIMEOUT must be > 0 (got 0s)"),
        ({"drain_timeout": "-10s"}, "MESHPLANE_DRAIN_TIMEOUT must be > 0 (got -10s)"),
        ({"drain_timeout": "-0.25"}, "MESHPLANE_DRAIN_TIMEOUT must be > 0 (got -250ms)"),
        ({"drain_timeout": "PT-5S"}, "MESHPLANE_DRAIN_TIMEOUT must be a duration like 500ms, 5s, 2m, 1h, 7d, "
         "seconds or ISO 8601 (PT5S) (got 'PT-5S')"),
        ({"default_schedule_to_start": "-1h"},
         "MESHPLANE_DEFAULT_SCHEDULE_TO_START must be >= 0 (got -1h; 0 is no limit)"),
        ({"default_start_to_close": "-5m"}, "MESHPLANE_DEFAULT_START_TO_CLOSE must be >= 0 (got -5m; 0 is no limit)"),
        ({"default_schedule_to_close": "-1d"},
         "MESHPLANE_DEFAULT_SCHEDULE_TO_CLOSE must be >= 0 (got -1d; 0 is no limit)"),
        ({"batch_linger": "-1s"}, "MESHPLANE_BATCH_LINGER must be >= 0 (got -1s; 0 never waits)"),
        ({"default_initial_backoff": "-5s"},
         "MESHPLANE_DEFAULT_INITIAL_BACKOFF must be >= 0 (got -5s; 0 retries at once)"),
        ({"progress_event_interval": "-1s"},
         "MESHPLANE_PROGRESS_EVENT_INTERVAL must be >= 0 (got -1s; 0 records every report)"),
        ({"task_retention": "-1s"}, "MESHPLANE_TASK_RETENTION must be >= 0 (got -1s; 0 keeps everything)"),
        ({"drain_timeout": "1e20"},  # was an OverflowError's traceback
         "MESHPLANE_DRAIN_TIMEOUT: expected a duration of at most 999999999 days, got '1e20'"),
        ({"sweep_interval": "inf"},
         "MESHPLANE_SWEEP_INTERVAL: expected a duration of at most 999999999 days, got 'inf'"),
        # a loop's interval: at least 10ms (1us heartbeats would be a million frames a second from each agent)
        ({"heartbeat_interval": "0.000001"},
         "MESHPLANE_HEARTBEAT_INTERVAL must be at least 10ms: it sets how often a loop runs (got 0.001ms)"),
        ({"sweep_interval": "9ms"}, "MESHPLANE_SWEEP_INTERVAL must be at least 10ms: it sets how often a loop runs "
         "(got 9ms)"),
        ({"housekeeping_interval": "0.005"},
         "MESHPLANE_HOUSEKEEPING_INTERVAL must be at least 10ms: it sets how often a loop runs (got 5ms)"),
        ({"sweep_interval": "nan"},
         "MESHPLANE_SWEEP_INTERVAL: expected a duration like 500ms, 5s, 2m, 1h, 7d or seconds, got 'nan'"),
        # what the settings ask of each other (kept, now naming the variables and the values)
        ({"heartbeat_interval": "30s"},
         "MESHPLANE_LEASE_TIMEOUT must be longer than MESHPLANE_HEARTBEAT_INTERVAL (got 20s and 30s)"),
        ({"default_initial_backoff": "2m"},
         "MESHPLANE_DEFAULT_MAX_BACKOFF must be >= MESHPLANE_DEFAULT_INITIAL_BACKOFF (got 1m and 2m)"),
        ({"tls_cert_file": "/c.pem"},
         "MESHPLANE_TLS_CERT_FILE and MESHPLANE_TLS_KEY_FILE go together: set both, or neither for plaintext"),
        ({"nats_tls_ca_file": "/ca.pem"}, "MESHPLANE_NATS_TLS_* settings need MESHPLANE_NATS_URL: the embedded "
         "nats-server is local and plaintext"),
        # several at once: all of them, on one line
        ({"sweep_interval": "0", "drain_timeout": "-1s"},
         "MESHPLANE_DRAIN_TIMEOUT must be > 0 (got -1s); MESHPLANE_SWEEP_INTERVAL must be > 0 (got 0s)"),
    ],
)  # fmt: skip
def test_a_bad_duration_is_refused_naming_its_variable(values: dict[str, str], message: str) -> None:
    assert refused(**values) == message


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"listen": "127.0.0.1:-1"}, "MESHPLANE_LISTEN must be HOST:PORT with a port from 0 to 65535 (port 0 picks "
         "one), or unix:PATH (got '127.0.0.1:-1')"),  # grpc: "ready" on 65535
        ({"listen": "127.0.0.1:70000"}, "MESHPLANE_LISTEN must be HOST:PORT with a port from 0 to 65535 (port 0 "
         "picks one), or unix:PATH (got '127.0.0.1:70000')"),
        ({"listen": "localhost"}, "MESHPLANE_LISTEN must be HOST:PORT with a port from 0 to 65535 (port 0 picks "
         "one), or unix:PATH (got 'localhost')"),  # grpc: port 443
        ({"listen": ":50051"}, "MESHPLANE_LISTEN must be HOST:PORT with a port from 0 to 65535 (port 0 picks one), "
         "or unix:PATH (got ':50051')"),  # grpc: "host must not be empty"
        ({"listen": "127.0.0.1:+5"}, "MESHPLANE_LISTEN must be HOST:PORT with a port from 0 to 65535 (port 0 picks "
         "one), or unix:PATH (got '127.0.0.1:+5')"),
        ({"listen": "::1:50051"}, "MESHPLANE_LISTEN must put an IPv6 host in brackets, e.g. [::]:50051 (got "
         "'::1:50051')"),
        ({"health_listen": "0.0.0.0:65536"}, "MESHPLANE_HEALTH_LISTEN must be HOST:PORT with a port from 0 to 65535 "
         "(port 0 picks one), or unix:PATH (got '0.0.0.0:65536')"),
        ({"metrics_listen": "nonsense"}, "MESHPLANE_METRICS_LISTEN must be HOST:PORT or :PORT with a port from 0 to "
         "65535 (got 'nonsense')"),  # was int("nonsense") at start-up
        ({"metrics_listen": "127.0.0.1:-1"}, "MESHPLANE_METRICS_LISTEN must be HOST:PORT or :PORT with a port from 0 "
         "to 65535 (got '127.0.0.1:-1')"),
        ({"metrics_listen": "unix:/tmp/m.sock"}, "MESHPLANE_METRICS_LISTEN must be HOST:PORT or :PORT with a port "
         "from 0 to 65535 (got 'unix:/tmp/m.sock')"),
        ({"metrics_listen": "[::]:9090"}, "MESHPLANE_METRICS_LISTEN takes an IPv6 host without brackets, e.g. "
         ":::9090 (the metrics server binds the host as given; got '[::]:9090')"),
    ],
)  # fmt: skip
def test_a_bad_listen_address_is_refused_naming_its_variable(values: dict[str, str], message: str) -> None:
    assert refused(**values) == message


def test_listen_addresses_the_servers_take_are_accepted() -> None:
    for listen in ("127.0.0.1:0", "0.0.0.0:65535", "[::]:50051", "localhost:50051", "unix:/tmp/p.sock"):
        assert Settings(listen=listen, health_listen=listen).listen == listen
    for metrics in ("", "127.0.0.1:9090", ":9090", ":::9090", "0.0.0.0:0"):  # (":::9090": the chart's IPv6 form)
        assert Settings(metrics_listen=metrics).metrics_listen == metrics
    assert Settings(health_listen="").health_listen == ""


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"log_level": "LOUD"}, "MESHPLANE_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL "
         "(got 'LOUD')"),
        ({"log_level": ""}, "MESHPLANE_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL (got '')"),
        ({"log_format": "xml"}, "MESHPLANE_LOG_FORMAT must be text or json (got 'xml')"),
        ({"accept_loops": "0"}, "MESHPLANE_ACCEPT_LOOPS must be >= 1 (got '0')"),
        ({"accept_loops": "abc"}, "MESHPLANE_ACCEPT_LOOPS must be a whole number (got 'abc')"),
        ({"default_max_attempts": "101"}, "MESHPLANE_DEFAULT_MAX_ATTEMPTS must be <= 100 (got '101')"),
        ({"default_backoff_multiplier": "inf"}, "MESHPLANE_DEFAULT_BACKOFF_MULTIPLIER must be a finite number "
         "(got 'inf')"),
        ({"default_backoff_multiplier": "1000"}, "MESHPLANE_DEFAULT_BACKOFF_MULTIPLIER must be <= 100.0 "
         "(got '1000')"),
        ({"default_strategy": "best"}, "MESHPLANE_DEFAULT_STRATEGY must be 'least_loaded', 'round_robin', "
         "'weighted' or 'consistent_hash' (got 'best')"),
        ({"progress_event_burst": "-1"}, "MESHPLANE_PROGRESS_EVENT_BURST must be >= 0 (got '-1')"),
        ({"max_payload_bytes": "600000000"},  # was an OverflowError's traceback from grpc at start-up
         "MESHPLANE_MAX_PAYLOAD_BYTES must be <= 536870911 (got '600000000')"),
        ({"replica_id": " "}, "MESHPLANE_REPLICA_ID must not be empty (unset, it is host-pid-random)"),
        ({"database_url": 5}, "MESHPLANE_DATABASE_URL: input should be a valid string"),  # (a URL is not repeated)
        ({"auth_tokens": "ci:,ops:a"}, "MESHPLANE_AUTH_TOKENS: the token named ci is empty"),
        ({"auth_tokens": "ci:a,ci:b"}, "MESHPLANE_AUTH_TOKENS: two tokens are named ci"),
        ({"auth_tokens": "anonymous:a"}, "MESHPLANE_AUTH_TOKENS: a token may not be named anonymous"),
        ({"auth_tokens": "ci:same,same"}, "MESHPLANE_AUTH_TOKENS: a token is listed twice"),  # (never shown)
    ],
)  # fmt: skip
def test_other_bad_settings_are_refused_naming_their_variable(values: dict[str, Any], message: str) -> None:
    assert refused(**values) == message


def test_the_largest_payload_grpc_can_carry_is_accepted() -> None:
    assert Settings(max_payload_bytes=536_870_911).max_payload_bytes == 536_870_911


def test_log_level_and_format_take_any_case() -> None:
    settings = Settings(log_level=" debug ", log_format="JSON")
    assert (settings.log_level, settings.log_format) == ("DEBUG", LogFormat.JSON)
    assert logs.LOG_LEVELS == LOG_LEVELS  # `agent run` checks MESHPLANE_LOG_LEVEL itself (cli.logs)


def test_the_values_tests_and_the_defaults_use_are_accepted(tmp_path: Path) -> None:
    """Small durations (fast test clocks) and the zeros that mean something stay accepted."""
    assert plane_settings(tmp_path).sweep_interval == timedelta(milliseconds=50)
    zeros = {name: 0 for name in ZERO_MEANS}
    settings = plane_settings(tmp_path, **zeros, heartbeat_interval=0.01, lease_timeout=0.02, housekeeping_interval=0.1)
    assert all(getattr(settings, name) == timedelta(0) for name in ZERO_MEANS)
    assert Settings().lease_timeout == timedelta(seconds=20)


def test_the_cli_names_a_setting_by_the_flag_it_came_from() -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        Settings(listen="localhost", sweep_interval="0")
    flags = {"listen": "--listen"}
    assert describe_errors(caught.value, lambda name: flags.get(name) or variable(name)) == (
        "--listen must be HOST:PORT with a port from 0 to 65535 (port 0 picks one), or unix:PATH (got 'localhost'); "
        "MESHPLANE_SWEEP_INTERVAL must be > 0 (got 0s)"
    )


def test_configure_logging_refuses_a_level_or_format_it_does_not_know() -> None:
    """`meshplane agent run` reads MESHPLANE_LOG_LEVEL/FORMAT itself: logging raised "Unknown level"."""
    with pytest.raises(
        CliError, match=r"^MESHPLANE_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL \(got 'LOUD'\)$"
    ):
        logs.configure_logging("LOUD")
    with pytest.raises(CliError, match=r"^MESHPLANE_LOG_FORMAT must be text or json \(got 'xml'\)$"):
        logs.configure_logging("INFO", "xml")


# ----------------------------------------------------------------------------- MESHPLANE_* variables nothing reads


def test_an_unknown_variable_is_named_with_the_setting_it_probably_meant() -> None:
    """A misspelled setting was ignored silently (the plane ran on the default it was meant to change)."""
    environ = {
        "MESHPLANE_LEASE_TIMOUT": "5s",
        "meshplane_databse_url": "postgresql+asyncpg://db/mesh",  # (settings are read in any case)
        "MESHPLANE_TARGTE": "plane:50051",  # a client's variable misspelled
        "MESHPLANE_COLOUR": "blue",  # close to nothing
        "PATH": "/usr/bin",
    }
    assert unknown_variable_warnings(environ) == [
        "unknown variable MESHPLANE_COLOUR ignored",
        "unknown variable MESHPLANE_LEASE_TIMOUT ignored (did you mean MESHPLANE_LEASE_TIMEOUT?)",
        "unknown variable MESHPLANE_TARGTE ignored (did you mean MESHPLANE_TARGET?)",
        "unknown variable meshplane_databse_url ignored (did you mean MESHPLANE_DATABASE_URL?)",
    ]


@pytest.mark.parametrize(
    "name",
    [
        # other programs' variables
        "MESHPLANE_TARGET", "MESHPLANE_TOKEN", "MESHPLANE_TLS", "MESHPLANE_TLS_CA_FILE", "MESHPLANE_TLS_SERVER_NAME",
        "MESHPLANE_TLS_CLIENT_CERT_FILE", "MESHPLANE_TLS_CLIENT_KEY_FILE", "MESHPLANE_GATEWAY",
        "MESHPLANE_GATEWAY_LISTEN", "MESHPLANE_GATEWAY_BIN", "MESHPLANE_HTTP_LISTEN", "MESHPLANE_GRPC_INGRESS_LISTEN",
        "MESHPLANE_LOADGEN_BIN", "MESHPLANE_FUZZ_SEED",
        # the settings themselves, in any case
        *(variable(name) for name in Settings.model_fields), "meshplane_lease_timeout",
    ],
)  # fmt: skip
def test_variables_meshplane_programs_read_are_not_unknown(name: str) -> None:
    assert unknown_variable_warnings({name: "x"}) == []


# What the kubelet injects (unless a Pod sets enableServiceLinks: false) for the Services `meshplane` (ports grpc
# 50051 and metrics 9090), `meshplane-grpc` (one unnamed port), `meshplane-metrics` (IPv6, UDP and SCTP) and
# `meshplane-gateway-http` (as tests/helm/kube.py's service_links builds them).
SERVICE_LINKS = {
    "MESHPLANE_SERVICE_HOST": "10.0.0.5",
    "MESHPLANE_SERVICE_PORT": "50051",
    "MESHPLANE_SERVICE_PORT_GRPC": "50051",
    "MESHPLANE_SERVICE_PORT_METRICS": "9090",
    "MESHPLANE_PORT": "tcp://10.0.0.5:50051",
    "MESHPLANE_PORT_50051_TCP": "tcp://10.0.0.5:50051",
    "MESHPLANE_PORT_50051_TCP_PROTO": "tcp",
    "MESHPLANE_PORT_50051_TCP_PORT": "50051",
    "MESHPLANE_PORT_50051_TCP_ADDR": "10.0.0.5",
    "MESHPLANE_PORT_9090_TCP": "tcp://10.0.0.5:9090",
    "MESHPLANE_PORT_9090_TCP_PROTO": "tcp",
    "MESHPLANE_PORT_9090_TCP_PORT": "9090",
    "MESHPLANE_PORT_9090_TCP_ADDR": "10.0.0.5",
    "MESHPLANE_GRPC_SERVICE_HOST": "10.0.0.7",
    "MESHPLANE_GRPC_SERVICE_PORT": "50051",
    "MESHPLANE_GRPC_PORT": "tcp://10.0.0.7:50051",
    "MESHPLANE_GRPC_PORT_50051_TCP": "tcp://10.0.0.7:50051",
    "MESHPLANE_GRPC_PORT_50051_TCP_PROTO": "tcp",
    "MESHPLANE_GRPC_PORT_50051_TCP_PORT": "50051",
    "MESHPLANE_GRPC_PORT_50051_TCP_ADDR": "10.0.0.7",
    "MESHPLANE_METRICS_SERVICE_HOST": "fd00::9",
    "MESHPLANE_METRICS_SERVICE_PORT": "9090",
    "MESHPLANE_METRICS_PORT": "udp://[fd00::9]:9090",
    "MESHPLANE_METRICS_PORT_9090_UDP": "udp://[fd00::9]:9090",
    "MESHPLANE_METRICS_PORT_9090_UDP_PROTO": "udp",
    "MESHPLANE_METRICS_PORT_9090_UDP_PORT": "9090",
    "MESHPLANE_METRICS_PORT_9090_UDP_ADDR": "fd00::9",
    "MESHPLANE_METRICS_PORT_9091_SCTP": "sctp://[fd00::9]:9091",
    "MESHPLANE_METRICS_PORT_9091_SCTP_PROTO": "sctp",
    "MESHPLANE_METRICS_PORT_9091_SCTP_PORT": "9091",
    "MESHPLANE_METRICS_PORT_9091_SCTP_ADDR": "fd00::9",
    "MESHPLANE_GATEWAY_HTTP_PORT_8080_UDP": "udp://10.0.0.8:8080",
}


def test_kubernetes_service_links_are_not_unknown() -> None:
    assert unknown_variable_warnings(SERVICE_LINKS) == []


@pytest.mark.parametrize(
    ("name", "value", "meant"),
    [
        # settings misspelled, named like a Service's link but valued as a setting: they were not warned about
        ("MESHPLANE_GRPC_PORT", "5000", None),
        ("MESHPLANE_METRIC_PORT", "9000", "MESHPLANE_METRICS_LISTEN"),
        ("MESHPLANE_HEALTH_PORT", "8081", "MESHPLANE_HEALTH_LISTEN"),
        # a link's name, but nothing the kubelet writes there
        ("MESHPLANE_SERVICE_HOST", "plane.example", None),  # a cluster IP, never a host name
        ("MESHPLANE_SERVICE_PORT", "0", None),
        ("MESHPLANE_SERVICE_PORT_GRPC", "grpc", None),
        ("MESHPLANE_PORT", "50051", None),
        ("MESHPLANE_PORT", "http://10.0.0.5:50051", None),
        ("MESHPLANE_PORT", "tcp://plane:50051", None),
        ("MESHPLANE_PORT", "tcp://fd00::9:50051", None),  # an IPv6 address in brackets, always
        ("MESHPLANE_PORT_50051_TCP", "tcp://10.0.0.5:9090", None),  # another port than its name's
        ("MESHPLANE_PORT_50051_TCP", "udp://10.0.0.5:50051", None),  # another protocol than its name's
        ("MESHPLANE_PORT_50051_TCP_PROTO", "udp", None),
        ("MESHPLANE_PORT_50051_TCP_PORT", "9090", None),
        ("MESHPLANE_PORT_50051_TCP_ADDR", "localhost", None),
    ],
)
def test_a_variable_named_like_a_service_link_but_not_valued_like_one_is_unknown(
    name: str, value: str, meant: str | None
) -> None:
    hint = f" (did you mean {meant}?)" if meant else ""
    assert unknown_variable_warnings({**SERVICE_LINKS, name: value}) == [f"unknown variable {name} ignored{hint}"]


_SOURCES = ("controlplane", "agent_runtime", "sdk", "gateway", "deploy", "examples", "tools")
_SOURCE_SUFFIXES = {".py", ".go", ".ts", ".yaml", ".tpl"}


def _variables_in_sources() -> set[str]:
    """Every MESHPLANE_* name the programs' sources, chart and examples mention (prose prefixes like
    MESHPLANE_TLS_* aside)."""
    found: set[str] = set()
    for top in _SOURCES:
        for path in (REPO / top).rglob("*"):
            if path.suffix in _SOURCE_SUFFIXES and "node_modules" not in path.parts and path.is_file():
                found.update(re.findall(r"MESHPLANE_[A-Z0-9_]+", path.read_text(errors="replace")))
    return {name for name in found if not name.endswith("_")}


def test_no_variable_a_meshplane_program_reads_is_unknown() -> None:
    """The list of other programs' variables (controlplane.settings.OTHER_PROGRAMS_VARIABLES) stays complete."""
    found = _variables_in_sources()
    assert {"MESHPLANE_TARGET", "MESHPLANE_GATEWAY_UPSTREAM", "MESHPLANE_LOADGEN_BIN"} <= found
    assert unknown_variable_warnings(dict.fromkeys(found, "x")) == []
