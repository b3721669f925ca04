"""gRPC plumbing shared by the agent and the client: channels, auth metadata, status -> error tree."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Sequence
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

from agent_runtime import _errors
from agent_runtime._tls import TLS, TlsFiles

DEFAULT_TARGET = "127.0.0.1:50051"
MAX_CONNECTIONS = 64
_MAX_MESSAGE = 64 * 1024 * 1024
_STATUS_DETAILS_KEY = "grpc-status-details-bin"
_RETIRED_CHANNEL_GRACE = 30.0  # seconds calls in progress get on replaced channels (renewed TLS, reconnect)

Metadata = tuple[tuple[str, str], ...]


def channel_options(*, keepalive: bool) -> list[tuple[str, Any]]:
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", _MAX_MESSAGE),
        ("grpc.max_send_message_length", _MAX_MESSAGE),
    ]
    if keepalive:
        # Notices a vanished or hung control plane (no RST: a dead host, a stopped process) within ~15s.
        # Not more often than the plane allows (5s without data), or it closes the connection. C-core waits for
        # a ping's answer `ping_timeout_ms` (60s by default), whatever `keepalive_timeout_ms` says: both are set.
        options += [
            ("grpc.keepalive_time_ms", 10_000),
            ("grpc.keepalive_timeout_ms", 5_000),
            ("grpc.http2.ping_timeout_ms", 5_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
        ]
    return options


def open_channel(
    target: str,
    *,
    keepalive: bool = False,
    own_connection: bool = False,
    round_robin: bool = False,
    credentials: grpc.ChannelCredentials | None = None,
    extra_options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """A grpc.aio channel to the control plane (call from inside the event loop): plaintext, or TLS with
    `credentials` (and `extra_options`, see TLS.channel_options).

    `own_connection`: the channel gets a TCP connection of its own (channels to one target otherwise share one).
    `round_robin`: calls go to every address the target names or resolves to in turn (gRPC's round_robin policy)
    instead of all to the first one that accepts a connection (pick_first); one address works as before.
    """
    options = [*channel_options(keepalive=keepalive), *extra_options]
    if own_connection:
        options.append(("grpc.use_local_subchannel_pool", 1))
    if round_robin:
        options.append(("grpc.lb_policy_name", "round_robin"))
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=options)
    return grpc.aio.secure_channel(target, credentials, options=options)


def list_authority(target: str) -> str | None:
    """The first address of an ``ipv4:`` or ``ipv6:`` target listing several: the authority grpc-js and the Go SDK
    give such a channel (over TLS, the name verified in the plane's certificate), where gRPC C-core gives the whole
    list (which no certificate matches). None for any other target."""
    scheme, _, addresses = target.partition(":")
    if scheme not in ("ipv4", "ipv6") or "," not in addresses:
        return None
    return addresses.removeprefix("//").removeprefix("/").split(",", 1)[0] or None


def _header_char(char: str) -> bool:
    return " " <= char <= "~"  # request headers carry printable ASCII only


def fits_a_header(text: str) -> bool:
    """Whether a request header (gRPC metadata) can carry `text` as it is."""
    return all(map(_header_char, text))


def bearer_token(token: str | None) -> str | None:
    """The token as a header carries it: surrounding whitespace (a token file's newline) stripped. A ValueError
    if it holds a character a request header cannot carry (see :func:`fits_a_header`)."""
    token = (token or "").strip()
    for position, char in enumerate(token):
        if not _header_char(char):
            what = "a non-ASCII character" if ord(char) > 0x7F else "a line break or control character"
            raise ValueError(
                f"the token holds {what} (position {position}), which a request header cannot carry: "
                "tokens must be printable ASCII"
            )
    return token or None


def auth_metadata(token: str | None) -> Metadata:
    """``authorization: Bearer <token>`` when a token is given (see :func:`bearer_token`)."""
    token = bearer_token(token)
    return (("authorization", f"Bearer {token}"),) if token else ()


_METADATA_KEY = re.compile(r"[a-z0-9][a-z0-9._-]*")


def call_metadata(pairs: Sequence[tuple[str, str]]) -> Metadata:
    """Metadata every call carries besides the token (e.g. ``("x-correlation-id", "order-42")``): keys lower-case
    ``[a-z0-9._-]`` (not ``authorization``: give a token; not ``-bin``), values printable ASCII. ValueError otherwise,
    before any call."""
    for key, value in pairs:
        if not _METADATA_KEY.fullmatch(key) or key.endswith("-bin") or key == "authorization":
            raise ValueError(f"metadata key {key!r} must be lower-case [a-z0-9._-] (not authorization, not -bin)")
        if not fits_a_header(value):
            raise ValueError(f"metadata value of {key!r} must be printable ASCII")
    return tuple(pairs)


def _status(trailing: Iterable[tuple[str, Any]] | None) -> status_pb2.Status | None:
    for key, value in trailing or ():
        if key == _STATUS_DETAILS_KEY and isinstance(value, bytes):
            status = status_pb2.Status()
            try:
                status.ParseFromString(value)
            except Exception:
                return None
            return status
    return None


# The plane closing the connection during the TLS handshake reads as "Socket closed" / "Connection reset";
# these say their own cause: nothing listening, an unknown host, or a plane certificate this side refused.
_CAUSE_SHOWN = ("Connection refused", "DNS resolution failed", "CERTIFICATE_VERIFY_FAILED", "certificate verify")


def cause_hidden(exc: grpc.aio.AioRpcError) -> bool:
    """UNAVAILABLE for a reason gRPC's details do not give (a handshake the plane refused looks like this)."""
    details = exc.details() or ""
    return exc.code() == grpc.StatusCode.UNAVAILABLE and not any(cause in details for cause in _CAUSE_SHOWN)


def closed_connection_hint(tls: TLS | None) -> str:
    """What to add when the plane closed the connection without saying why: what a TLS mismatch would look like
    from this side (a plane serving TLS to a plaintext caller, or requiring a client certificate)."""
    if tls is None:
        return " (it closed the connection: a plane serving TLS does that to plaintext; set MESHPLANE_TLS_CA_FILE)"
    if tls.cert_file is None:
        return (
            " (over TLS, showing no client certificate: a plane that requires one closes the connection; "
            "set MESHPLANE_TLS_CLIENT_CERT_FILE and MESHPLANE_TLS_CLIENT_KEY_FILE)"
        )
    return (
        " (over TLS: a plane that requires client certificates closes the connection when its client CA did not "
        f"sign {tls.cert_file})"
    )


def error_from_rpc(exc: grpc.aio.AioRpcError, target: str, *, closed_hint: str = "") -> _errors.RpcError:
    """The SDK error for a failed call, with the details the plane packed into the status. `closed_hint` is added
    to an UNAVAILABLE whose cause gRPC does not give (see `closed_connection_hint`)."""
    code: grpc.StatusCode = exc.code()
    message = exc.details() or code.name
    status = _status(exc.trailing_metadata())
    reason = ""
    violations: list[_errors.FieldViolation] = []
    preconditions: list[_errors.PreconditionViolation] = []
    resource_type = resource_name = ""
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations += [_errors.FieldViolation(v.field, v.description) for v in bad.field_violations]
        elif detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
            failure = error_details_pb2.PreconditionFailure()
            detail.Unpack(failure)
            preconditions += [
                _errors.PreconditionViolation(v.type, v.subject, v.description) for v in failure.violations
            ]
        elif detail.Is(error_details_pb2.ResourceInfo.DESCRIPTOR):
            resource = error_details_pb2.ResourceInfo()
            detail.Unpack(resource)
            resource_type, resource_name = resource.resource_type, resource.resource_name

    if code == grpc.StatusCode.NOT_FOUND:
        return _errors.NotFound(
            message, resource_type=resource_type, resource_name=resource_name, reason=reason or "NOT_FOUND"
        )
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return _errors.InvalidArgument(message, violations=tuple(violations), reason=reason)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        cls = (
            _errors.VersionConflict
            if any(v.type == "VERSION_MISMATCH" for v in preconditions)
            else _errors.FailedPrecondition
        )
        return cls(message, violations=tuple(preconditions), reason=reason)
    if code == grpc.StatusCode.UNAVAILABLE:
        hint = closed_hint if not reason and cause_hidden(exc) and "Socket closed" in message else ""
        return _errors.Unavailable(target, message, from_plane=bool(reason), hint=hint)  # ErrorInfo: the plane's
    simple: dict[grpc.StatusCode, type[_errors.RpcError]] = {
        grpc.StatusCode.ALREADY_EXISTS: _errors.AlreadyExists,
        grpc.StatusCode.RESOURCE_EXHAUSTED: _errors.ResourceExhausted,
        grpc.StatusCode.UNAUTHENTICATED: _errors.Unauthenticated,
        grpc.StatusCode.PERMISSION_DENIED: _errors.PermissionDenied,
        grpc.StatusCode.DEADLINE_EXCEEDED: _errors.DeadlineExceeded,
    }
    return simple.get(code, _errors.RpcError)(message, code=code.name, reason=reason)


_UNSET: Any = object()


class Connection:
    """Channels to the control plane with their auth metadata; maps failed calls to the error tree.

    Channels open lazily, inside the event loop of the first call. With `connections` > 1, calls take that
    many channels in turn, each on its own TCP connection: the control plane accepts one connection's calls
    one at a time (it listens with several servers on one port, and the kernel spreads connections, not
    calls, over them), so many concurrent calls go faster over several.

    With `round_robin` (agents and clients alike, as in the Go SDK), a target naming several addresses
    (``ipv4:host:port,host:port``, a DNS name with several addresses) has each call or stream go to the next
    address, and the channels' connections are their own (never shared with another channel to the same target,
    as a Go connection's), so that :meth:`reconnect` (the agent's) really opens new ones. With or without it, such
    a list's authority is its first address (see :func:`list_authority`).
    """

    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        timeout: float | None = 30.0,
        keepalive: bool = False,
        connections: int = 1,
        tls: TLS | None = None,
        round_robin: bool = False,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> None:
        if not 1 <= connections <= MAX_CONNECTIONS:
            raise ValueError(f"connections must be between 1 and {MAX_CONNECTIONS}, got {connections}")
        self.target = target
        self.metadata = (*auth_metadata(token), *call_metadata(metadata))
        self.timeout = timeout
        self._keepalive = keepalive
        self._round_robin = round_robin
        # Read now: a file that cannot be read fails here, not at the first call.
        self._tls_files = TlsFiles(tls) if tls is not None else None
        self.closed_hint = closed_connection_hint(tls)
        self._extra_options = tls.channel_options() if tls is not None else []
        # Clients and agents alike: over TLS, C-core would otherwise verify the whole list as the plane's name.
        authority = list_authority(target)
        if authority is not None and not self._extra_options:  # a TLS server name given wins
            self._extra_options = [("grpc.default_authority", authority)]
        # Channels replaced (renewed TLS files, `reconnect`), closing once their calls end (within a grace).
        self._retiring: dict[asyncio.Task[None], grpc.aio.Channel] = {}
        self._size = connections
        self._channels: list[grpc.aio.Channel] = []  # opened as calls first need them
        self._next = 0
        self._stubs: dict[tuple[type[Any], int], Any] = {}

    def _channel(self, index: int) -> grpc.aio.Channel:
        while len(self._channels) <= index:
            own = self._size > 1 or self._round_robin
            self._channels.append(
                open_channel(
                    self.target,
                    keepalive=self._keepalive,
                    own_connection=own,
                    round_robin=self._round_robin,
                    credentials=self._tls_files.credentials if self._tls_files is not None else None,
                    extra_options=self._extra_options,
                )
            )
        return self._channels[index]

    def stub(self, stub_class: type[Any]) -> Any:
        """A stub on the next channel in turn (for one call or stream)."""
        index = self._next
        self._next = (index + 1) % self._size
        stub = self._stubs.get((stub_class, index))
        if stub is None:
            stub = self._stubs[(stub_class, index)] = stub_class(self._channel(index))
        return stub

    async def unary(self, method: Any, request: Any, *, timeout: float | None = _UNSET) -> Any:
        """Call a unary method of a stub; failures raise the matching :class:`RpcError`."""
        try:
            return await method(request, metadata=self.metadata, timeout=self.timeout if timeout is _UNSET else timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                self.renew_tls()  # a renewed certificate may be what the plane wants now: the next call uses it
            raise self.error(exc) from exc

    def error(self, exc: grpc.aio.AioRpcError) -> _errors.RpcError:
        """The SDK error for a call of this connection that failed."""
        return error_from_rpc(exc, self.target, closed_hint=self.closed_hint)

    def renew_tls(self) -> bool:
        """When the TLS files changed (and load), open new channels with them from now on; calls in progress
        finish on the old ones, which close after a grace. True when they were renewed."""
        if self._tls_files is None or not self._tls_files.renew():
            return False
        self._retire_channels()
        return True

    def reconnect(self) -> None:
        """Replace the channels by new ones, which start connecting now (new TCP connections: behind a load
        balancer, possibly to another replica; a DNS name is resolved again). Calls in progress finish on the old
        ones, which close after a grace. Call from inside the event loop."""
        self._retire_channels()
        for index in range(self._size):
            self._channel(index).get_state(try_to_connect=True)

    def _retire_channels(self) -> None:
        """New channels from now on; the current ones close once their calls end (within a grace)."""
        retired, self._channels = self._channels, []
        self._stubs.clear()
        for channel in retired:
            closing = asyncio.ensure_future(channel.close(grace=_RETIRED_CHANNEL_GRACE))
            self._retiring[closing] = channel
            closing.add_done_callback(self._retiring.pop)

    async def close(self) -> None:
        channels, self._channels = self._channels, []
        self._stubs.clear()
        for channel in channels:
            await channel.close()
        # Closing now: the calls left on retired channels are cancelled, as on the others.
        retiring, self._retiring = dict(self._retiring), {}
        for closing in retiring:
            closing.cancel()
        await asyncio.gather(*retiring, return_exceptions=True)
        for channel in retiring.values():
            await channel.close()
