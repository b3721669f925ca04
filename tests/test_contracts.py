"""The contracts' shape: HTTP mappings where the design says, none where it says not."""

from __future__ import annotations

import json
from pathlib import Path

from google.api import annotations_pb2
from google.protobuf import descriptor

from meshplane.v1 import (
    agent_link_pb2,
    agent_pb2,
    agent_service_pb2,
    audit_pb2,
    channel_pb2,
    common_pb2,
    state_pb2,
    task_pb2,
    task_service_pb2,
)

OPENAPI_SPEC = Path(__file__).resolve().parents[1] / "generated" / "openapi" / "meshplane.swagger.json"
# Every file of the meshplane.v1 contracts, services or not.
CONTRACT_FILES = [
    agent_link_pb2,
    agent_pb2,
    agent_service_pb2,
    audit_pb2,
    channel_pb2,
    common_pb2,
    state_pb2,
    task_pb2,
    task_service_pb2,
]

CLIENT_SERVICES = [
    task_service_pb2.DESCRIPTOR.services_by_name["TaskService"],
    agent_service_pb2.DESCRIPTOR.services_by_name["AgentService"],
    channel_pb2.DESCRIPTOR.services_by_name["ChannelService"],
    state_pb2.DESCRIPTOR.services_by_name["StateService"],
    audit_pb2.DESCRIPTOR.services_by_name["AuditService"],
]


def _http_rule(method: descriptor.MethodDescriptor) -> object | None:
    options = method.GetOptions()
    if options.HasExtension(annotations_pb2.http):
        return options.Extensions[annotations_pb2.http]
    return None


def test_every_client_rpc_is_mapped_to_http() -> None:
    unmapped = [m.full_name for s in CLIENT_SERVICES for m in s.methods if _http_rule(m) is None]
    assert unmapped == []


def test_agent_link_is_not_mapped_to_http() -> None:
    connect = agent_link_pb2.DESCRIPTOR.services_by_name["AgentLinkService"].methods_by_name["Connect"]
    assert connect.client_streaming and connect.server_streaming  # type: ignore[attr-defined]
    assert _http_rule(connect) is None


def test_openapi_tags_are_the_services_with_http_routes() -> None:
    """The REST document names only services a REST client can call: a stream-only service (the agent
    link) has no route, so no tag either."""
    routed = {
        service.name
        for module in CONTRACT_FILES
        for service in module.DESCRIPTOR.services_by_name.values()
        if any(_http_rule(method) is not None for method in service.methods)
    }
    spec = json.loads(OPENAPI_SPEC.read_text())
    tags = [tag["name"] for tag in spec["tags"]]
    assert sorted(tags) == sorted(routed)
    operation_tags = {
        tag for path in spec["paths"].values() for operation in path.values() for tag in operation["tags"]
    }
    assert operation_tags == routed


def test_cancel_follows_aip_custom_method_style() -> None:
    cancel = task_service_pb2.DESCRIPTOR.services_by_name["TaskService"].methods_by_name["CancelTask"]
    rule = _http_rule(cancel)
    assert rule is not None
    assert rule.post == "/v1/tasks/{task_id}:cancel"  # type: ignore[attr-defined]


def test_enums_start_with_unspecified_zero() -> None:
    files = [task_pb2, agent_link_pb2, agent_service_pb2, channel_pb2, state_pb2, task_service_pb2]
    for module in files:
        for enum in module.DESCRIPTOR.enum_types_by_name.values():
            zero = enum.values_by_number[0]
            assert zero.name.endswith("_UNSPECIFIED"), enum.full_name


def test_task_states_cover_the_lifecycle() -> None:
    names = set(task_pb2.TaskState.keys())
    for state in ["QUEUED", "ASSIGNED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT", "DEAD_LETTER"]:
        assert f"TASK_STATE_{state}" in names


def test_frames_that_carry_tasks_or_results_can_batch() -> None:
    for message, field in [
        (agent_link_pb2.Assignments, "assignments"),
        (agent_link_pb2.TaskResults, "results"),
        (agent_link_pb2.TaskUpdates, "updates"),
        (agent_link_pb2.Cancellations, "cancellations"),
        (agent_link_pb2.ResultAcks, "tasks"),
    ]:
        assert message.DESCRIPTOR.fields_by_name[field].is_repeated, message.DESCRIPTOR.full_name
