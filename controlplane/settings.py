"""Control plane settings: one validated object, read from MESHPLANE_* env vars and CLI flags."""

from __future__ import annotations

import difflib
import ipaddress
import logging
import math
import os
import re
import socket
import uuid
from collections.abc import Callable, Mapping
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import pydantic
from pydantic import AfterValidator, BeforeValidator, Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from controlplane.credentials import credential_problems
from controlplane.domain.scheduling import Strategy

ENV_PREFIX = "MESHPLANE_"

logger = logging.getLogger(__name__)


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

Naming = Callable[[str], str]
"""How a message names a setting: as its field (`sweep_interval`), variable (`MESHPLANE_SWEEP_INTERVAL`), or flag."""


def variable(name: str) -> str:
    """The environment variable of the setting `name` (`sweep_interval` -> `MESHPLANE_SWEEP_INTERVAL`)."""
    return ENV_PREFIX + name.upper()


class SettingError(ValueError):
    """A setting refused. `describe` writes the message naming each setting as it is given a name for it: its
    str() names fields (as Python callers pass them); the CLI names variables or flags (see `describe_errors`)."""

    def __init__(self, describe: Callable[[Naming], str]) -> None:
        self.describe = describe
        super().__init__(describe(lambda name: name))


_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_LONGEST = timedelta.max.total_seconds()  # what a timedelta holds (999999999 days)


def _seconds(text: str) -> float | None:
    """The seconds "1.5", "500ms", "5s", "2m", "1h" or "7d" stand for; None if it is none of them."""
    scale = 1.0
    for unit in ("ms", "s", "m", "h", "d"):
        number = text.removesuffix(unit)
        if number != text:
            text, scale = number, _UNIT_SECONDS[unit]
            break
    try:
        return float(text) * scale
    except ValueError:
        return None


def _parse_duration(value: object) -> object:
    """Accept "1.5" (seconds), "500ms", "5s", "2m", "1h", "7d", numbers, or ISO 8601 ("PT5S", left to pydantic)."""
    if not isinstance(value, str):
        return value
    text = value.strip().lower()
    if text.startswith("p"):
        return value
    seconds = _seconds(text)
    if seconds is None or math.isnan(seconds):
        raise ValueError(f"expected a duration like 500ms, 5s, 2m, 1h, 7d or seconds, got {value!r}")
    if abs(seconds) > _LONGEST:
        raise ValueError(f"expected a duration of at most {timedelta.max.days} days, got {value!r}")
    return timedelta(seconds=seconds)


def shown(value: timedelta) -> str:
    """A duration as the settings take it: "-1h", "0s", "1.5s", "500ms"."""
    seconds = value.total_seconds()

    def number(x: float) -> str:
        return f"{x:.6f}".rstrip("0").rstrip(".")

    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{number(seconds / size)}{unit}"
    if seconds == 0 or abs(seconds) >= 1:
        return f"{number(seconds)}s"
    return f"{number(seconds * 1000)}ms"


# What 0 means for the duration settings that take it. Every other duration must be more than 0: it drives a
# loop or a deadline (0 would spin, or end everything at once). No duration may be negative.
ZERO_MEANS: dict[str, str] = {
    "default_initial_backoff": "0 retries at once",
    "default_max_backoff": "0 retries at once",
    "default_schedule_to_start": "0 is no limit",
    "default_start_to_close": "0 is no limit",
    "default_schedule_to_close": "0 is no limit",
    "batch_linger": "0 never waits",
    "progress_event_interval": "0 records every report",
    "task_retention": "0 keeps everything",
    "audit_retention": "0 keeps everything",
    "channel_retention": "0 keeps everything",
    "instance_retention": "0 keeps everything",
}


# The durations that set how often a loop runs (the plane's sweeps, every agent's heartbeat): shorter than this,
# they would keep a core busy for nothing (a 1us heartbeat is a million frames a second from each agent).
LOOP_INTERVALS = frozenset({"heartbeat_interval", "sweep_interval", "housekeeping_interval"})
MIN_LOOP_INTERVAL = timedelta(milliseconds=10)


def _check_duration(value: timedelta, info: ValidationInfo) -> timedelta:
    name = info.field_name or "duration"
    zero = ZERO_MEANS.get(name)
    if zero is None and value <= timedelta(0):
        raise SettingError(lambda n: f"{n(name)} must be > 0 (got {shown(value)})")
    if name in LOOP_INTERVALS and value < MIN_LOOP_INTERVAL:
        raise SettingError(
            lambda n: (
                f"{n(name)} must be at least {shown(MIN_LOOP_INTERVAL)}: it sets how often a loop runs "
                f"(got {shown(value)})"
            )
        )
    if value < timedelta(0):
        raise SettingError(lambda n: f"{n(name)} must be >= 0 (got {shown(value)}; {zero})")
    return value


Duration = Annotated[timedelta, BeforeValidator(_parse_duration), AfterValidator(_check_duration)]

_PORT = re.compile(r"[0-9]{1,5}")


def _port_in_range(port: str) -> bool:
    return _PORT.fullmatch(port) is not None and int(port) <= 65535


def _check_grpc_listen(name: str, value: str) -> str:
    """A gRPC listen address: HOST:PORT (an IPv6 host in brackets, as gRPC wants it), or a unix socket."""
    if value.startswith(("unix:", "unix-abstract:")):
        return value
    host, _, port = value.rpartition(":")
    if not host or not _port_in_range(port):
        raise SettingError(
            lambda n: (
                f"{n(name)} must be HOST:PORT with a port from 0 to 65535 (port 0 picks one), or unix:PATH "
                f"(got {value!r})"
            )
        )
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise SettingError(lambda n: f"{n(name)} must put an IPv6 host in brackets, e.g. [::]:50051 (got {value!r})")
    return value


def _check_http_listen(name: str, value: str) -> str:
    """The /metrics listen address: HOST:PORT or :PORT (all interfaces); the server binds the host as given."""
    host, sep, port = value.rpartition(":")
    if not sep or not _port_in_range(port):
        raise SettingError(
            lambda n: f"{n(name)} must be HOST:PORT or :PORT with a port from 0 to 65535 (got {value!r})"
        )
    if host.startswith("["):
        raise SettingError(
            lambda n: (
                f"{n(name)} takes an IPv6 host without brackets, e.g. :::9090 (the metrics server binds the "
                f"host as given; got {value!r})"
            )
        )
    return value


_SECRET = frozenset({"database_url", "nats_url", "auth_tokens"})  # values never repeated in a message

_MUST_BE: dict[str, Callable[[dict[str, Any]], str]] = {
    "greater_than_equal": lambda ctx: f">= {ctx['ge']}",
    "greater_than": lambda ctx: f"> {ctx['gt']}",
    "less_than_equal": lambda ctx: f"<= {ctx['le']}",
    "less_than": lambda ctx: f"< {ctx['lt']}",
    "int_parsing": lambda ctx: "a whole number",
    "int_from_float": lambda ctx: "a whole number",
    "int_type": lambda ctx: "a whole number",
    "float_parsing": lambda ctx: "a number",
    "float_type": lambda ctx: "a number",
    "finite_number": lambda ctx: "a finite number",
    "enum": lambda ctx: str(ctx["expected"]),
    "time_delta_parsing": lambda ctx: "a duration like 500ms, 5s, 2m, 1h, 7d, seconds or ISO 8601 (PT5S)",
    "time_delta_type": lambda ctx: "a duration like 500ms, 5s, 2m, 1h, 7d, seconds or ISO 8601 (PT5S)",
}


def describe_errors(error: pydantic.ValidationError, naming: Naming = variable) -> str:
    """Why settings were refused, on one line (problems separated by "; "), each naming its setting as `naming`
    does (by default its MESHPLANE_* variable)."""
    problems: list[str] = []
    for item in error.errors():
        ctx: dict[str, Any] = item.get("ctx") or {}
        cause = ctx.get("error")
        if isinstance(cause, SettingError):
            problems.append(cause.describe(naming))
            continue
        loc = [str(part) for part in item["loc"]]
        where = naming(loc[0]) + "".join(f"[{part}]" for part in loc[1:]) if loc else ""
        if isinstance(cause, ValueError):
            text = str(cause)
        elif item["type"] in _MUST_BE:
            text = f"must be {_MUST_BE[item['type']](ctx)}"
        else:
            text = item["msg"][:1].lower() + item["msg"][1:]
        value = item.get("input")
        if isinstance(value, str | int | float) and not isinstance(cause, ValueError) and loc and loc[0] not in _SECRET:
            text += f" (got {value!r})"
        if not where:
            problems.append(text)
        elif text.startswith("must be "):
            problems.append(f"{where} {text}")
        else:
            problems.append(f"{where}: {text}")
    return "; ".join(problems)


def _default_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


# MESHPLANE_* variables that are not the plane's settings but that other Meshplane programs read, so that they are
# legitimately set where a plane runs (one shell, one Pod's environment): `unknown_variable_warnings` never reports
# them. Keep this list complete: `grep -rhoE "MESHPLANE_[A-Z0-9_]+"` over *.py, *.go, *.ts, *.yaml and *.tpl.
OTHER_PROGRAMS_VARIABLES: dict[str, str] = {
    "MESHPLANE_TARGET": "clients (the CLI, the Python, Go and TypeScript SDKs): the plane's address",
    "MESHPLANE_TOKEN": "clients: the bearer token they send",
    "MESHPLANE_TLS": "clients: TLS trusting the system's roots",
    "MESHPLANE_TLS_CA_FILE": "clients: the CA that signed the plane's certificate",
    "MESHPLANE_TLS_SERVER_NAME": "clients: the name the plane's certificate is verified against",
    "MESHPLANE_TLS_CLIENT_CERT_FILE": "clients: a client certificate (mTLS)",
    "MESHPLANE_TLS_CLIENT_KEY_FILE": "clients: the client certificate's key",
    "MESHPLANE_GATEWAY": "meshplane up: on or off, its REST gateway",
    "MESHPLANE_HTTP_LISTEN": "meshplane up: its REST gateway's address",
    "MESHPLANE_GRPC_INGRESS_LISTEN": "meshplane up: its gateway's gRPC ingress address",
    "MESHPLANE_LOADGEN_BIN": "meshplane bench: the load generator's binary",
}
OTHER_PROGRAMS_PREFIXES: dict[str, str] = {
    "MESHPLANE_GATEWAY_": "the REST gateway's own settings, and MESHPLANE_GATEWAY_BIN (the binary meshplane up runs)",
    "MESHPLANE_FUZZ_": "the tests' fuzzing budget",
}
# What Kubernetes injects for each Service of the namespace (unless a Pod sets enableServiceLinks: false), named after
# it (upper case, - as _): <SVC>_SERVICE_HOST, <SVC>_SERVICE_PORT(_<PORT NAME>), <SVC>_PORT, and per port
# <SVC>_PORT_<n>_<PROTOCOL>(_ADDR|_PORT|_PROTO). A Service `meshplane` or `meshplane-*` puts them in our prefix, where
# a misspelled setting may bear the same name (`meshplane-metrics` gives <SVC>_PORT, also metrics_listen misspelled):
# so a variable is a service link only if its value is what the kubelet writes there too, the Service's cluster IP,
# a port number, `tcp://IP:PORT` or a protocol. (<SVC>, not real names: the tests read these sources for the
# variables Meshplane's programs read.)
_SERVICE = r"MESHPLANE(?:_[A-Z0-9_]+)?"
_SERVICE_PORT = _SERVICE + r"_PORT_(?P<port>[0-9]+)_(?P<protocol>TCP|UDP|SCTP)"
_LINK_URL = re.compile(r"(?P<protocol>tcp|udp|sctp)://(?:\[(?P<ipv6>[^\]]+)\]|(?P<ipv4>[0-9.]+)):(?P<port>[0-9]+)")
_LINK_PORT = re.compile(r"[1-9][0-9]{0,4}")


def _is_ip(value: str, version: int | None = None) -> bool:
    """Whether `value` is an IP address (of that version, if given): a Service's cluster IP."""
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return False
    return version is None or address.version == version


def _is_link_port(value: str) -> bool:
    """Whether `value` is a port number as the kubelet writes one (1-65535, no leading zero)."""
    return _LINK_PORT.fullmatch(value) is not None and int(value) <= 65535


def _is_link_url(value: str, protocol: str | None = None, port: str | None = None) -> bool:
    """Whether `value` is a port's address as the kubelet writes it (`tcp://10.0.0.7:50051`, `udp://[fd00::9]:53`),
    with that protocol (upper case, as in the variable's name) and port if given."""
    url = _LINK_URL.fullmatch(value)
    if url is None or not _is_link_port(url["port"]):
        return False
    ip_fits = _is_ip(url["ipv6"], 6) if url["ipv6"] is not None else _is_ip(url["ipv4"], 4)
    protocol_fits = protocol is None or url["protocol"] == protocol.lower()
    port_fits = port is None or url["port"] == port
    return ip_fits and protocol_fits and port_fits


# Each service-link variable's name, and whether a value is what the kubelet writes in it (given the name's match).
_SERVICE_LINKS: tuple[tuple[re.Pattern[str], Callable[[re.Match[str], str], bool]], ...] = (
    (re.compile(_SERVICE + "_SERVICE_HOST"), lambda _, value: _is_ip(value)),
    (re.compile(_SERVICE + "_SERVICE_PORT(?:_[A-Z0-9_]+)?"), lambda _, value: _is_link_port(value)),
    (re.compile(_SERVICE + "_PORT"), lambda _, value: _is_link_url(value)),
    (re.compile(_SERVICE_PORT), lambda name, value: _is_link_url(value, name["protocol"], name["port"])),
    (re.compile(_SERVICE_PORT + "_PROTO"), lambda name, value: value == name["protocol"].lower()),
    (re.compile(_SERVICE_PORT + "_PORT"), lambda name, value: value == name["port"]),
    (re.compile(_SERVICE_PORT + "_ADDR"), lambda _, value: _is_ip(value)),
)


def _service_link(name: str, value: str) -> bool:
    """Whether `name=value` is one of the variables Kubernetes injects for a Service named meshplane(-*)."""
    for pattern, fits in _SERVICE_LINKS:
        match = pattern.fullmatch(name)
        if match is not None and fits(match, value):
            return True
    return False


def _known_variable(name: str, value: str) -> bool:
    """Whether the MESHPLANE_* variable `name` (upper case), set to `value`, is something Meshplane or Kubernetes
    means."""
    return (
        name in _SETTING_VARIABLES
        or name in OTHER_PROGRAMS_VARIABLES
        or name.startswith(tuple(OTHER_PROGRAMS_PREFIXES))
        or _service_link(name, value)
    )


def _likely_meant(name: str) -> str | None:
    """The known variable `name` is probably a misspelling of, if one is close (compared without the prefix, which
    they all share)."""
    known = {
        variable.removeprefix(ENV_PREFIX): variable for variable in (*_SETTING_VARIABLES, *OTHER_PROGRAMS_VARIABLES)
    }
    close = difflib.get_close_matches(name.removeprefix(ENV_PREFIX), known, n=1)
    return known[close[0]] if close else None


def unknown_variable_warnings(environ: Mapping[str, str]) -> list[str]:
    """One warning per MESHPLANE_* variable of `environ` that nothing reads (the settings ignore it silently), naming
    the setting it probably meant when one is close. Like the settings, names are read in any case."""
    warnings: list[str] = []
    for given in sorted(environ):
        name = given.upper()
        if not name.startswith(ENV_PREFIX) or _known_variable(name, environ[given]):
            continue
        meant = _likely_meant(name)
        hint = f" (did you mean {meant}?)" if meant else ""
        warnings.append(f"unknown variable {given} ignored{hint}")
    return warnings


def warn_about_unknown_variables(environ: Mapping[str, str] = os.environ) -> None:
    """Log `unknown_variable_warnings` (a command that reads the plane's settings, once logging is set up)."""
    for warning in unknown_variable_warnings(environ):
        logger.warning("%s", warning)


class Settings(BaseSettings):
    """Everything the control plane can be told.

    Durations accept seconds ("5", "0.5"), "500ms", "5s", "2m", "1h", "7d", or ISO 8601 ("PT5S"); none may be
    negative, and only those in ZERO_MEANS may be 0. A refused setting raises pydantic.ValidationError, whose
    problems `describe_errors` puts on one line naming the variables.

    With no URLs, the control plane is embedded: SQLite in `data_dir` and a child `nats-server`.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", validate_default=True)

    listen: str = Field("127.0.0.1:50051", description="gRPC listen address (host:port; port 0 picks one).")
    accept_loops: int = Field(
        8,
        ge=1,
        le=64,
        description="gRPC servers sharing the listen port, each accepting calls on its own (connections are "
        "spread over them); a grpc.aio server accepts one call at a time.",
    )
    data_dir: Path = Field(Path(".meshplane"), description="Directory for the embedded SQLite file and NATS.")
    database_url: str = Field(
        "", description="SQLAlchemy async URL; empty means SQLite in data_dir (postgresql+asyncpg://... in prod)."
    )
    nats_url: str = Field("", description="NATS server URL(s), comma-separated; empty starts an embedded nats-server.")
    nats_tls_ca_file: Path | None = Field(
        None,
        description="PEM CA bundle that verifies the NATS servers' certificates (TLS to NATS); unset: a tls:// "
        "URL trusts the system's roots.",
    )
    nats_tls_cert_file: Path | None = Field(
        None, description="PEM client certificate (chain) for NATS servers that require one, with nats_tls_key_file."
    )
    nats_tls_key_file: Path | None = Field(None, description="PEM private key of nats_tls_cert_file.")
    replica_id: str = Field(default_factory=_default_replica_id, description="This replica's id (unique per process).")
    tls_cert_file: Path | None = Field(
        None, description="PEM certificate (chain) the gRPC port serves TLS with, with tls_key_file; unset: plaintext."
    )
    tls_key_file: Path | None = Field(None, description="PEM private key of tls_cert_file.")
    tls_client_ca_file: Path | None = Field(
        None, description="PEM CA bundle: when set, clients and agents must present a certificate it signed (mTLS)."
    )
    auth_tokens: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Bearer tokens accepted from clients and agents (comma-separated; `name:token` names the caller in the "
            "audit trail); empty disables auth."
        ),
    )

    heartbeat_interval: Duration = Field(timedelta(seconds=5), description="How often agents must heartbeat.")
    lease_timeout: Duration = Field(
        timedelta(seconds=20), description="Silence after which a session is lost and its tasks re-queued."
    )
    drain_timeout: Duration = Field(timedelta(seconds=30), description="Grace given to agents and work on shutdown.")
    max_payload_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        le=(2**31 - 1) // 4,  # gRPC's message limits are 4x this, and must fit a C int (more: an OverflowError)
        description="Largest accepted payload (input/output/message).",
    )

    default_strategy: Strategy = Field(Strategy.LEAST_LOADED, description="Scheduling strategy when a task names none.")
    default_max_attempts: int = Field(3, ge=1, le=100)
    default_initial_backoff: Duration = Field(timedelta(seconds=1))
    default_max_backoff: Duration = Field(timedelta(seconds=60))
    default_backoff_multiplier: float = Field(
        2.0, ge=1.0, le=100.0, allow_inf_nan=False, description="As a task's own: 1 to 100 (services.tasks)."
    )
    default_schedule_to_start: Duration = Field(
        timedelta(hours=1), description="Longest wait for an agent per attempt (0 = forever)."
    )
    default_start_to_close: Duration = Field(
        timedelta(minutes=10), description="Longest run of one attempt (0 = no limit)."
    )
    default_schedule_to_close: Duration = Field(
        timedelta(hours=24), description="Overall deadline of a task (0 = no limit)."
    )

    db_pool_size: int = Field(
        10, ge=1, le=200, description="PostgreSQL connections per pool (SQLAlchemy + overflow, and the hot path)."
    )
    batch_max_size: int = Field(256, ge=1, description="Largest batch of claims/commits/frames the plane forms.")
    batch_linger: Duration = Field(
        timedelta(milliseconds=2), description="How long a batch waits for company before it is written (0: never)."
    )
    sweep_interval: Duration = Field(timedelta(seconds=1), description="How often timeouts and leases are checked.")
    progress_event_burst: int = Field(
        100, ge=0, description="Progress reports of an attempt recorded as task events one each, before thinning."
    )
    progress_event_interval: Duration = Field(
        timedelta(seconds=1),
        description="After the burst, at most one progress event per attempt this often (0: every report is one).",
    )
    task_retention: Duration = Field(
        timedelta(days=7),
        description="How long ended tasks (with their events and attempts) are kept; 0 keeps them forever.",
    )
    audit_retention: Duration = Field(
        timedelta(days=90), description="How long audit entries are kept; 0 keeps them forever."
    )
    channel_retention: Duration = Field(
        timedelta(days=7),
        description="How long a channel nobody publishes to or subscribes to stays listed; 0 lists every channel "
        "ever used.",
    )
    instance_retention: Duration = Field(
        timedelta(days=7),
        description="How long a disconnected agent instance stays listed (each agent process is one); 0 lists every "
        "one ever connected.",
    )
    housekeeping_interval: Duration = Field(
        timedelta(seconds=30),
        description="How often expired state, and tasks, audit entries, channels and disconnected agent instances "
        "past their retention, are deleted.",
    )

    metrics_listen: str = Field("", description="Prometheus /metrics listen address (host:port); empty disables.")
    health_listen: str = Field(
        "",
        description="Also serve grpc.health.v1 alone here, in plaintext even when the gRPC port serves TLS, for "
        "probes that cannot speak TLS (the kubelet's) (host:port; empty: off).",
    )
    log_level: str = Field("INFO", description=f"One of {', '.join(LOG_LEVELS)} (any case).")
    log_format: LogFormat = Field(LogFormat.TEXT, description="text or json (any case).")

    @field_validator(
        "tls_cert_file",
        "tls_key_file",
        "tls_client_ca_file",
        "nats_tls_ca_file",
        "nats_tls_cert_file",
        "nats_tls_key_file",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("listen", "health_listen")
    @classmethod
    def _grpc_listen(cls, value: str, info: ValidationInfo) -> str:
        """HOST:PORT, port 0-65535 (grpc would quietly take 99999 as 34463, -1 as 65535, and no port as 443);
        health_listen may be empty (off)."""
        name = info.field_name or "listen"
        return value if name == "health_listen" and not value else _check_grpc_listen(name, value)

    @field_validator("metrics_listen")
    @classmethod
    def _metrics_listen(cls, value: str) -> str:
        return _check_http_listen("metrics_listen", value) if value else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        level = value.strip().upper()
        if level not in LOG_LEVELS:
            raise SettingError(lambda n: f"{n('log_level')} must be one of {', '.join(LOG_LEVELS)} (got {value!r})")
        return level

    @field_validator("log_format", mode="before")
    @classmethod
    def _log_format(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        text = value.strip().lower()
        if text not in {f.value for f in LogFormat}:
            raise SettingError(lambda n: f"{n('log_format')} must be text or json (got {value!r})")
        return text

    @field_validator("replica_id")
    @classmethod
    def _replica_id(cls, value: str) -> str:
        if not value.strip():
            raise SettingError(lambda n: f"{n('replica_id')} must not be empty (unset, it is host-pid-random)")
        return value

    @field_validator("auth_tokens", mode="before")
    @classmethod
    def _split_tokens(cls, value: object) -> object:
        if isinstance(value, str):
            return [token.strip() for token in value.split(",") if token.strip()]
        return value

    @field_validator("auth_tokens")
    @classmethod
    def _check_tokens(cls, value: list[str]) -> list[str]:
        problems = credential_problems(value)
        if problems:
            raise SettingError(lambda n: f"{n('auth_tokens')}: {'; '.join(problems)}")
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        # Each duration's own bounds are checked as it is read (Duration); here, what settings ask of each other.
        lease, heartbeat = self.lease_timeout, self.heartbeat_interval
        if lease <= heartbeat:
            raise SettingError(
                lambda n: (
                    f"{n('lease_timeout')} must be longer than {n('heartbeat_interval')} "
                    f"(got {shown(lease)} and {shown(heartbeat)})"
                )
            )
        initial, maximum = self.default_initial_backoff, self.default_max_backoff
        if maximum < initial:
            raise SettingError(
                lambda n: (
                    f"{n('default_max_backoff')} must be >= {n('default_initial_backoff')} "
                    f"(got {shown(maximum)} and {shown(initial)})"
                )
            )
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise SettingError(
                lambda n: (
                    f"{n('tls_cert_file')} and {n('tls_key_file')} go together: set both, or neither for plaintext"
                )
            )
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise SettingError(
                lambda n: (
                    f"{n('tls_client_ca_file')} needs {n('tls_cert_file')} and {n('tls_key_file')}: client "
                    "certificates need TLS"
                )
            )
        if (self.nats_tls_cert_file is None) != (self.nats_tls_key_file is None):
            raise SettingError(
                lambda n: f"{n('nats_tls_cert_file')} and {n('nats_tls_key_file')} go together: set both, or neither"
            )
        nats_tls = self.nats_tls_ca_file or self.nats_tls_cert_file
        if nats_tls is not None and not self.nats_url:
            raise SettingError(
                lambda n: (
                    f"{n('nats_tls_')}* settings need {n('nats_url')}: the embedded nats-server is local and plaintext"
                )
            )
        return self

    @property
    def effective_database_url(self) -> str:
        """The database URL, defaulting to SQLite inside data_dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'meshplane.db').resolve()}"

    @property
    def channel_use_refresh(self) -> float:
        """Seconds after which a replica records a channel's use again: an hour, or a tenth of a shorter
        retention, so that a channel in use never looks unused for its retention."""
        retention = self.channel_retention.total_seconds()
        return min(3600.0, retention / 10) if retention > 0 else 3600.0

    @property
    def embedded_nats(self) -> bool:
        return not self.nats_url

    @property
    def uses_data_dir(self) -> bool:
        """Whether the plane keeps anything in data_dir (the default SQLite file, the embedded NATS)."""
        return not self.database_url or self.embedded_nats


_SETTING_VARIABLES = frozenset(variable(name) for name in Settings.model_fields)  # (see unknown_variable_warnings)
