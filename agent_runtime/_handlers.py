"""Handler registrations: how a handler's input is decoded and validated, and its declared schemas."""

from __future__ import annotations

import inspect
import json
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pydantic

from agent_runtime import _payload
from meshplane.v1 import common_pb2

Decoder = Callable[[common_pb2.Payload], Any]

# Annotations that need no validation: the decoded JSON is handed over as it is.
_PASS_THROUGH: tuple[Any, ...] = (inspect.Parameter.empty, Any, object, None, type(None))


class InputInvalid(Exception):
    """The input does not match the handler's declared type (becomes ``validation_failed``)."""

    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors or []


@dataclass(frozen=True, slots=True)
class InputSpec:
    """How to turn a payload into the handler's argument, and the JSON Schema that describes it."""

    decode: Decoder
    schema: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class TaskHandler:
    """A function registered for a capability."""

    capability: str
    function: Callable[..., Any]
    is_async: bool
    description: str
    input: InputSpec
    output_schema: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class ChannelHandler:
    """A function registered for a channel's messages."""

    channel: str
    function: Callable[..., Any]
    is_async: bool
    input: InputSpec


def _summary(error: pydantic.ValidationError) -> tuple[str, list[dict[str, Any]]]:
    errors: list[dict[str, Any]] = json.loads(error.json(include_url=False, include_context=False))
    parts = [f"{'.'.join(str(p) for p in e.get('loc', ())) or '(input)'}: {e.get('msg', '')}" for e in errors]
    return "; ".join(parts), errors


def _plain(payload: common_pb2.Payload) -> Any:
    try:
        return _payload.decode(payload)
    except ValueError as exc:
        raise InputInvalid(f"input is not valid JSON: {exc}") from exc


def _bytes(payload: common_pb2.Payload) -> Any:
    kind = payload.WhichOneof("kind")
    if kind == "data":
        return payload.data
    if kind == "json":
        return json.dumps(_payload.value_to_python(payload.json)).encode()
    return b""


def _validated(adapter: pydantic.TypeAdapter[Any]) -> Decoder:
    def decode(payload: common_pb2.Payload) -> Any:
        try:
            raw = _payload.raw_json(payload)
            if raw is not None:
                return adapter.validate_json(raw)
            return adapter.validate_python(_payload.decode(payload))
        except pydantic.ValidationError as exc:
            message, errors = _summary(exc)
            raise InputInvalid(message, errors) from exc
        except ValueError as exc:
            raise InputInvalid(f"input is not valid JSON: {exc}") from exc

    return decode


def _schema_of(annotation: Any) -> dict[str, Any] | None:
    if annotation in _PASS_THROUGH or annotation is bytes:
        return None
    try:
        schema: dict[str, Any] = pydantic.TypeAdapter(annotation).json_schema()
    except (pydantic.PydanticUserError, pydantic.errors.PydanticSchemaGenerationError, TypeError):
        return None
    return schema


def input_spec(annotation: Any, explicit_schema: dict[str, Any] | None = None) -> InputSpec:
    """The decoder for a parameter annotated with ``annotation`` (pydantic validates anything typed)."""
    if annotation in _PASS_THROUGH:
        return InputSpec(_plain, explicit_schema)
    if annotation is bytes:
        return InputSpec(_bytes, explicit_schema)
    adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(annotation)
    return InputSpec(_validated(adapter), explicit_schema or _schema_of(annotation))


def _hints(function: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(function)
    except Exception:  # unresolvable forward references: treat the parameters as untyped
        return {}


def _data_annotation(function: Callable[..., Any]) -> Any:
    """The annotation of the handler's second parameter (the input), or `empty`."""
    parameters = list(inspect.signature(function).parameters.values())
    if len(parameters) < 2:
        raise TypeError(f"handler {function.__qualname__} must take (ctx, data)")
    return _hints(function).get(parameters[1].name, inspect.Parameter.empty)


def _description(function: Callable[..., Any], given: str) -> str:
    if given:
        return given
    doc = inspect.getdoc(function) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def _is_async(function: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
        getattr(function, "__call__", None)  # noqa: B004 - callable objects with an async __call__
    )


def task_handler(
    capability: str,
    function: Callable[..., Any],
    *,
    description: str = "",
    input_schema: dict[str, Any] | None = None,
    output_schema: dict[str, Any] | None = None,
) -> TaskHandler:
    returns = _hints(function).get("return", inspect.Parameter.empty)
    return TaskHandler(
        capability=capability,
        function=function,
        is_async=_is_async(function),
        description=_description(function, description),
        input=input_spec(_data_annotation(function), input_schema),
        output_schema=output_schema if output_schema is not None else _schema_of(returns),
    )


def channel_handler(channel: str, function: Callable[..., Any]) -> ChannelHandler:
    return ChannelHandler(
        channel=channel,
        function=function,
        is_async=_is_async(function),
        input=input_spec(_data_annotation(function)),
    )
