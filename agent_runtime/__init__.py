"""Meshplane's Python SDK: serve capabilities with :class:`Agent`, use the mesh with :class:`MeshClient`.

::

    from agent_runtime import Agent, TaskContext

    agent = Agent("greeter")

    @agent.task("greet")
    async def greet(ctx: TaskContext, data: dict) -> dict:
        return {"greeting": f"hello {data['name']}"}

    agent.run("localhost:50051")
"""

from agent_runtime._agent import Agent
from agent_runtime._client import MeshClient, Subscription, TaskHandle, TaskSpec
from agent_runtime._context import ChannelContext, TaskContext
from agent_runtime._errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    InstanceIdTaken,
    InvalidArgument,
    MeshplaneError,
    NonRetryableError,
    NotFound,
    PermissionDenied,
    PreconditionViolation,
    RegistrationRejected,
    ResourceExhausted,
    RpcError,
    TaskCancelled,
    TaskDeadLettered,
    TaskError,
    TaskFailed,
    TaskTimedOut,
    Unauthenticated,
    Unavailable,
    VersionConflict,
)
from agent_runtime._payload import NotSerializable
from agent_runtime._runtime import AgentStatus
from agent_runtime._state import StateStore
from agent_runtime._sync_client import SyncMeshClient
from agent_runtime._tls import TLS
from agent_runtime._types import (
    AgentInfo,
    AgentInstanceInfo,
    AttemptInfo,
    AuditEntry,
    CapabilityInfo,
    ChannelInfo,
    ChannelMessage,
    ErrorInfo,
    Page,
    StateEntry,
    SubmitResult,
    TaskEvent,
    TaskEventType,
    TaskInfo,
    TaskState,
)
from agent_runtime._version import __version__

__all__ = [
    "TLS",
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
