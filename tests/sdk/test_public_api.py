"""The SDK's public surface is deliberate: this list changes only on purpose."""

from __future__ import annotations

import subprocess
import sys

import agent_runtime

EXPECTED_EXPORTS = [
    "Agent",
    "AgentInfo",
    "AgentInstanceInfo",
    "AgentStatus",
    "AlreadyExists",
    "AttemptInfo",
    "AuditEntry",
    "CapabilityInfo",
    "ChannelContext",
    "ChannelInfo",
    "ChannelMessage",
    "DeadlineExceeded",
    "ErrorInfo",
    "FailedPrecondition",
    "FieldViolation",
    "InstanceIdTaken",
    "InvalidArgument",
    "MeshClient",
    "MeshplaneError",
    "NonRetryableError",
    "NotFound",
    "NotSerializable",
    "Page",
    "PermissionDenied",
    "PreconditionViolation",
    "RegistrationRejected",
    "ResourceExhausted",
    "RpcError",
    "StateEntry",
    "StateStore",
    "SubmitResult",
    "Subscription",
    "SyncMeshClient",
    "TLS",
    "TaskCancelled",
    "TaskContext",
    "TaskDeadLettered",
    "TaskError",
    "TaskEvent",
    "TaskEventType",
    "TaskFailed",
    "TaskHandle",
    "TaskInfo",
    "TaskSpec",
    "TaskState",
    "TaskTimedOut",
    "Unauthenticated",
    "Unavailable",
    "VersionConflict",
    "__version__",
]


def test_the_export_list_is_pinned() -> None:
    assert sorted(agent_runtime.__all__) == sorted(EXPECTED_EXPORTS)
    for name in agent_runtime.__all__:
        assert hasattr(agent_runtime, name), name


def test_public_names_come_from_private_modules_and_are_documented() -> None:
    for name in agent_runtime.__all__:
        value = getattr(agent_runtime, name)
        if isinstance(value, type):
            assert value.__module__.startswith("agent_runtime._"), name
            assert value.__doc__, f"{name} has no docstring"


def test_errors_form_one_tree() -> None:
    errors = [getattr(agent_runtime, n) for n in agent_runtime.__all__ if n not in ("FieldViolation",)]
    roots = {e for e in errors if isinstance(e, type) and issubclass(e, Exception)}
    assert all(issubclass(e, agent_runtime.MeshplaneError) for e in roots)
    assert issubclass(agent_runtime.NonRetryableError, agent_runtime.TaskError)
    assert issubclass(agent_runtime.VersionConflict, agent_runtime.FailedPrecondition)
    assert issubclass(agent_runtime.TaskCancelled, agent_runtime.TaskFailed)


def test_the_sdk_does_not_import_the_control_plane() -> None:
    code = "import sys, agent_runtime; print(sorted(m for m in sys.modules if m.startswith('controlplane')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == "[]"


def test_the_sdk_version_is_the_projects_version() -> None:
    from importlib import metadata

    assert agent_runtime.__version__ == metadata.version("meshplane")
