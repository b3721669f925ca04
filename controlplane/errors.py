"""The control plane's one error tree. The API edge maps it to gRPC status codes in one place."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One invalid field: its path (e.g. "target.capability") and what is wrong with it."""

    field: str
    description: str


@dataclass(frozen=True, slots=True)
class PreconditionViolation:
    """One failed precondition: a type (e.g. "VERSION_MISMATCH"), its subject, and why."""

    type: str
    subject: str
    description: str


class MeshplaneError(Exception):
    """Root of every error the control plane raises on purpose."""

    reason: str = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(MeshplaneError):
    reason = "NOT_FOUND"

    def __init__(self, resource_type: str, name: str) -> None:
        super().__init__(f"{resource_type} {name!r} not found")
        self.resource_type = resource_type
        self.name = name


class AlreadyExists(MeshplaneError):
    reason = "ALREADY_EXISTS"


class InvalidArgument(MeshplaneError):
    """Bad input. Carries every offending field, so a client can fix them all at once."""

    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: list[FieldViolation] | FieldViolation) -> None:
        items = [violations] if isinstance(violations, FieldViolation) else list(violations)
        if not items:
            raise ValueError("InvalidArgument needs at least one violation")
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in items))
        self.violations = items

    @classmethod
    def of(cls, field_path: str, description: str) -> InvalidArgument:
        return cls(FieldViolation(field_path, description))


class FailedPrecondition(MeshplaneError):
    reason = "FAILED_PRECONDITION"

    def __init__(self, message: str, violations: list[PreconditionViolation] | None = None) -> None:
        super().__init__(message)
        self.violations = violations or []


class VersionMismatch(FailedPrecondition):
    """A compare-and-set found another version than the caller expected."""

    def __init__(self, subject: str, expected: int, actual: int | None) -> None:
        stored = "absent" if actual is None else f"version {actual}"
        description = f"expected version {expected}, stored is {stored}"
        super().__init__(
            f"{subject}: {description}",
            [PreconditionViolation("VERSION_MISMATCH", subject, description)],
        )
        self.expected = expected
        self.actual = actual


class ResourceExhausted(MeshplaneError):
    reason = "RESOURCE_EXHAUSTED"


class Unauthenticated(MeshplaneError):
    reason = "UNAUTHENTICATED"


class Unavailable(MeshplaneError):
    reason = "UNAVAILABLE"
