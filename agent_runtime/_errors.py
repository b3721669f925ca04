"""The SDK's one error tree: handler errors, control plane (gRPC) errors, and task outcomes."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent_runtime._types import TaskInfo


class MeshplaneError(Exception):
    """Root of every error the SDK raises on purpose."""


# ---------------------------------------------------------------- raised by task handlers


class TaskError(MeshplaneError):
    """Raise from a task handler to fail the attempt with a chosen code, message and details.

    The code defaults to the class name, so ``class OutOfStock(TaskError)`` fails with code
    ``"OutOfStock"``. A TaskError is retryable unless ``retryable=False`` is passed or the class
    derives from :class:`NonRetryableError`.
    """

    retryable: bool = True

    def __init__(
        self,
        message: str = "",
        *,
        code: str | None = None,
        details: Mapping[str, Any] | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or type(self).__name__
        self.details: dict[str, Any] = dict(details or {})
        if retryable is not None:
            self.retryable = retryable


class NonRetryableError(TaskError):
    """A task error that no further attempt can fix: the task ends FAILED at once."""

    retryable = False


# ---------------------------------------------------------------- agent lifecycle


class RegistrationRejected(MeshplaneError):
    """The control plane refused the agent's registration (a bad name, capability, limit, ...)."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(f"registration rejected: {message}" + (f" (field {field})" if field else ""))
        self.message = message
        self.field = field


class InstanceIdTaken(MeshplaneError):
    """Another agent registered this agent's instance_id, and the control plane gave it this agent's session.

    The agent stops instead of reconnecting: two live agents sharing one instance_id would otherwise replace each
    other for good. Give each agent process its own instance_id. ``message`` is the control plane's explanation.
    """

    def __init__(self, instance_id: str, message: str) -> None:
        super().__init__(f"instance_id {instance_id!r} is taken by another agent: {message}")
        self.instance_id = instance_id
        self.message = message


# ---------------------------------------------------------------- control plane (gRPC) errors


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One invalid request field: its path (e.g. ``"target.capability"``) and what is wrong with it."""

    field: str
    description: str


@dataclass(frozen=True, slots=True)
class PreconditionViolation:
    """One failed precondition: its type (e.g. ``"VERSION_MISMATCH"``), subject and description."""

    type: str
    subject: str
    description: str


class RpcError(MeshplaneError):
    """A control plane call failed. ``code`` is the gRPC status code name, e.g. ``"NOT_FOUND"``."""

    def __init__(self, message: str, *, code: str = "UNKNOWN", reason: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.reason = reason


class NotFound(RpcError):
    """The task, agent, state entry ... does not exist."""

    def __init__(self, message: str, *, resource_type: str = "", resource_name: str = "", reason: str = "") -> None:
        if resource_type and resource_name:
            message = f"{resource_type} {resource_name} not found"
        super().__init__(message, code="NOT_FOUND", reason=reason)
        self.resource_type = resource_type
        self.resource_name = resource_name


class AlreadyExists(RpcError):
    """The resource exists already."""


class InvalidArgument(RpcError):
    """The request was invalid; ``violations`` names every offending field."""

    def __init__(self, message: str, *, violations: tuple[FieldViolation, ...] = (), reason: str = "") -> None:
        if violations:
            message = "; ".join(f"{v.field}: {v.description}" for v in violations)
        super().__init__(f"invalid argument: {message}", code="INVALID_ARGUMENT", reason=reason)
        self.violations = violations


class FailedPrecondition(RpcError):
    """The request is valid but the resource is not in a state that allows it."""

    def __init__(self, message: str, *, violations: tuple[PreconditionViolation, ...] = (), reason: str = "") -> None:
        super().__init__(message, code="FAILED_PRECONDITION", reason=reason)
        self.violations = violations


class VersionConflict(FailedPrecondition):
    """A compare-and-set write found another version than the expected one; nothing changed."""


class ResourceExhausted(RpcError):
    """A limit was hit (payload size, queue length, ...)."""


class Unauthenticated(RpcError):
    """The call carried no valid bearer token."""


class PermissionDenied(RpcError):
    """The token may not do this."""


class Unavailable(RpcError):
    """The control plane could not be reached, or answered that it cannot serve the call now (shutting down,
    its database out of reach): retry later. ``details`` is gRPC's text, or the plane's own reason."""

    def __init__(self, target: str, details: str = "", *, from_plane: bool = False, hint: str = "") -> None:
        handshake = _failed_handshake(details)
        if from_plane and details:  # it answered: say what it said, not that it could not be reached
            message = f"control plane at {target} is unavailable: {details}"
        elif handshake:  # this side refused the plane's certificate (or the handshake failed otherwise)
            message = f"TLS handshake with the control plane at {target} failed: {handshake}"
        else:
            message = f"control plane unreachable at {target}{hint}"
        super().__init__(message, code="UNAVAILABLE")
        self.target = target
        self.details = details


_HANDSHAKE = re.compile(r"[Hh]andshake failed.*?(?:OPENSSL_internal:)?([A-Z_]+: [^:]+?)(?:: OK)?$")


def _failed_handshake(details: str) -> str:
    """Why a TLS handshake failed, from gRPC's details ("CERTIFICATE_VERIFY_FAILED: unable to get local issuer
    certificate"); "" when they are not about a failed handshake."""
    if "andshake failed" not in details:
        return ""
    found = _HANDSHAKE.search(details)
    return found.group(1) if found else details[details.index("andshake failed") - 1 :]


class DeadlineExceeded(RpcError):
    """The call did not finish in time."""


# ---------------------------------------------------------------- task outcomes (client side)


class TaskFailed(MeshplaneError):
    """Waiting for a task's result: it ended without succeeding. ``task`` is the final record."""

    def __init__(self, task: TaskInfo) -> None:
        error = task.error
        why = f": {error.code}: {error.message}" if error is not None else ""
        super().__init__(f"task {task.id} ended {task.state.value}{why}")
        self.task = task


class TaskCancelled(TaskFailed):
    """The task was cancelled."""


class TaskTimedOut(TaskFailed):
    """The task exceeded its schedule-to-start or overall deadline."""


class TaskDeadLettered(TaskFailed):
    """The task used up its attempts."""
