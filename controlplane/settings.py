"""Control plane settings: one validated object, read from MESHPLANE_* env vars and CLI flags."""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import BeforeValidator, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from controlplane.domain.scheduling import Strategy


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _parse_duration(value: object) -> object:
    """Accept "1.5" (seconds), "500ms", "5s", "2m", "1h", "7d", numbers, or ISO 8601 ("PT5S", left to pydantic)."""
    if not isinstance(value, str):
        return value
    text = value.strip().lower()
    if text.startswith("p"):
        return value
    for unit in ("ms", "s", "m", "h", "d"):
        number = text.removesuffix(unit)
        if number != text:
            with contextlib.suppress(ValueError):
                return timedelta(seconds=float(number) * _UNIT_SECONDS[unit])
            break
    with contextlib.suppress(ValueError):
        return timedelta(seconds=float(text))
    raise ValueError(f"expected a duration like 500ms, 5s, 2m, 1h, 7d or seconds, got {value!r}")


Duration = Annotated[timedelta, BeforeValidator(_parse_duration)]


def _default_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Settings(BaseSettings):
    """Everything the control plane can be told.

    Durations accept seconds ("5", "0.5"), "500ms", "5s", "2m", "1h", "7d", or ISO 8601 ("PT5S").

    With no URLs, the control plane is embedded: SQLite in `data_dir` and a child `nats-server`.
    """

    model_config = SettingsConfigDict(env_prefix="MESHPLANE_", extra="ignore", validate_default=True)

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
        description="Bearer tokens accepted from clients and agents (comma-separated); empty disables auth.",
    )

    heartbeat_interval: Duration = Field(timedelta(seconds=5), description="How often agents must heartbeat.")
    lease_timeout: Duration = Field(
        timedelta(seconds=20), description="Silence after which a session is lost and its tasks re-queued."
    )
    drain_timeout: Duration = Field(timedelta(seconds=30), description="Grace given to agents and work on shutdown.")
    max_payload_bytes: int = Field(1024 * 1024, ge=1024, description="Largest accepted payload (input/output/message).")

    default_strategy: Strategy = Field(Strategy.LEAST_LOADED, description="Scheduling strategy when a task names none.")
    default_max_attempts: int = Field(3, ge=1, le=100)
    default_initial_backoff: Duration = Field(timedelta(seconds=1))
    default_max_backoff: Duration = Field(timedelta(seconds=60))
    default_backoff_multiplier: float = Field(2.0, ge=1.0)
    default_schedule_to_start: Duration = Field(
        timedelta(hours=1), description="Longest wait for an agent per attempt (0 = forever)."
    )
    default_start_to_close: Duration = Field(timedelta(minutes=10), description="Longest run of one attempt.")
    default_schedule_to_close: Duration = Field(timedelta(hours=24), description="Overall deadline of a task.")

    db_pool_size: int = Field(
        10, ge=1, le=200, description="PostgreSQL connections per pool (SQLAlchemy + overflow, and the hot path)."
    )
    batch_max_size: int = Field(256, ge=1, description="Largest batch of claims/commits/frames the plane forms.")
    batch_linger: Duration = Field(
        timedelta(milliseconds=2), description="How long a batch waits for company before it is written."
    )
    sweep_interval: Duration = Field(timedelta(seconds=1), description="How often timeouts and leases are checked.")
    progress_event_burst: int = Field(
        100, ge=0, description="Progress reports of an attempt recorded as task events one each, before thinning."
    )
    progress_event_interval: Duration = Field(
        timedelta(seconds=1), description="After the burst, at most one progress event per attempt this often."
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
    housekeeping_interval: Duration = Field(
        timedelta(seconds=30),
        description="How often expired state, and tasks, audit entries and channels past their retention, are deleted.",
    )

    metrics_listen: str = Field("", description="Prometheus /metrics listen address (host:port); empty disables.")
    health_listen: str = Field(
        "",
        description="Also serve grpc.health.v1 alone here, in plaintext even when the gRPC port serves TLS, for "
        "probes that cannot speak TLS (the kubelet's) (host:port; empty: off).",
    )
    log_level: str = Field("INFO")
    log_format: LogFormat = Field(LogFormat.TEXT)

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

    @field_validator("listen", "metrics_listen", "health_listen")
    @classmethod
    def _port_in_range(cls, value: str) -> str:
        """A TCP address's port is 0-65535 (grpc would quietly take 99999 as 34463); unix: paths pass."""
        if not value or value.startswith("unix:") or ":" not in value:
            return value
        port = value.rsplit(":", 1)[1]
        if port.isdigit() and int(port) > 65535:
            raise ValueError(f"port {port} of {value!r} is out of range (0-65535)")
        return value

    @field_validator("auth_tokens", mode="before")
    @classmethod
    def _split_tokens(cls, value: object) -> object:
        if isinstance(value, str):
            return [token.strip() for token in value.split(",") if token.strip()]
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        if self.lease_timeout <= self.heartbeat_interval:
            raise ValueError("lease_timeout must be longer than heartbeat_interval")
        if self.default_max_backoff < self.default_initial_backoff:
            raise ValueError("default_max_backoff must be >= default_initial_backoff")
        for name in ("task_retention", "audit_retention", "channel_retention"):
            if getattr(self, name) < timedelta(0):
                raise ValueError(f"{name} must be >= 0 (0 keeps everything)")
        if self.housekeeping_interval <= timedelta(0):
            raise ValueError("housekeeping_interval must be > 0")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together: set both, or neither for plaintext")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file needs tls_cert_file and tls_key_file: client certificates need TLS")
        if (self.nats_tls_cert_file is None) != (self.nats_tls_key_file is None):
            raise ValueError("nats_tls_cert_file and nats_tls_key_file go together: set both, or neither")
        nats_tls = self.nats_tls_ca_file or self.nats_tls_cert_file
        if nats_tls is not None and not self.nats_url:
            raise ValueError("nats_tls_* settings need nats_url: the embedded nats-server is local and plaintext")
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
