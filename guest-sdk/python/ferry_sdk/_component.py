"""Adapts the bindings componentize-py generates to :class:`ferry_sdk._guest.Guest`.

Only a component imports this module (``wit_world`` exists only there): the build
script's entry module does ``from ferry_sdk._component import Handler`` after
importing the tenant's module. Interfaces the project does not declare are absent
from its world, so their modules are missing here and the SDK refuses their use.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import List, Optional, Tuple

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import settings as wit_settings

from . import capabilities as caps
from . import context as ferry_context
from . import http as ferry_http
from . import state as ferry_state
from ._guest import Guest, Host
from ._outbox import OutputLimits
from .context import Level, WireOutput
from .processor import Status, exported_processor


def _optional(name: str) -> Optional[ModuleType]:
    try:
        return importlib.import_module(f"wit_world.imports.{name}")
    except ImportError:
        return None


# A world that also imports `wasi:http/types` names ferry's `types` by its package.
types = _optional("types") or importlib.import_module("wit_world.imports.ferry_processor_types")
_log = _optional("log")
_output = _optional("output")
_headers = _optional("headers")
_state = _optional("state")

if _optional("outgoing_handler") is not None:
    from . import _wasi_http

    ferry_http.install(_wasi_http.send_all)
else:

    def _http_not_declared(requests: object) -> list:
        raise caps.missing("http")

    ferry_http.install(_http_not_declared)


def _emit_error(error: object) -> ferry_context.EmitError:
    assert _output is not None
    if isinstance(error, _output.EmitError_TopicNotAllowed):
        return ferry_context.TopicNotAllowed(error.value)
    if isinstance(error, _output.EmitError_TooLarge):
        return ferry_context.TooLarge(error.value)
    if isinstance(error, _output.EmitError_TooMany):
        return ferry_context.TooMany()
    if isinstance(error, _output.EmitError_OverBudget):
        return ferry_context.OverBudget(error.value)
    if isinstance(error, _output.EmitError_UnknownSource):
        return ferry_context.UnknownSource(error.value)
    return ferry_context.EmitError(f"the host refused the output: {error!r}")


def _emit(source: Optional[int], output: WireOutput) -> None:
    assert _output is not None
    headers = [types.Header(name, value) for name, value in output.headers] if output.headers else []
    try:
        _output.emit(source, _output.OutputRecord(output.topic, output.key, output.value, headers))
    except Err as error:
        raise _emit_error(error.value) from None


def _output_limits() -> OutputLimits:
    assert _output is not None
    limits = _output.limits()
    return OutputLimits(
        frozenset(limits.topics),
        limits.max_records,
        limits.records_used,
        limits.max_record_bytes,
        limits.batch_bytes,
        limits.bytes_used,
        limits.record_cost,
        limits.header_cost,
    )


def _emit_many(outputs: bytes) -> Optional[Tuple[int, ferry_context.EmitError]]:
    assert _output is not None
    try:
        _output.emit_many(outputs)
    except Err as error:
        index, refused = error.value
        return index, _emit_error(refused)
    return None


def _state_error(error: object) -> ferry_state.StateError:
    assert _state is not None
    if isinstance(error, _state.StateError_KeyTooLarge):
        return ferry_state.KeyTooLarge(error.value)
    if isinstance(error, _state.StateError_ValueTooLarge):
        return ferry_state.ValueTooLarge(error.value)
    if isinstance(error, _state.StateError_PartitionFull):
        return ferry_state.PartitionFull(error.value)
    if isinstance(error, _state.StateError_TooManyWrites):
        return ferry_state.TooManyWrites(error.value)
    return ferry_state.StateError(f"the host refused the state write: {error!r}")


class _HostStore:
    """The ``state`` import, with its refusals raised as :class:`ferry_sdk.StateError`."""

    __slots__ = ()

    def get(self, key: bytes) -> Optional[bytes]:
        assert _state is not None
        return _state.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        assert _state is not None
        try:
            _state.put(key, value)
        except Err as error:
            raise _state_error(error.value) from None

    def delete(self, key: bytes) -> None:
        assert _state is not None
        try:
            _state.delete(key)
        except Err as error:
            raise _state_error(error.value) from None

    def scan(self, prefix: bytes, limit: int) -> List[Tuple[bytes, bytes]]:
        assert _state is not None
        return list(_state.scan(prefix, limit))


def _wit_levels() -> dict[Level, object]:
    assert _log is not None
    return {level: getattr(_log.Level, level.name) for level in Level}


_LEVELS = _wit_levels() if _log is not None else {}


def _write_log(level: Level, message: str) -> None:
    assert _log is not None
    _log.log(_LEVELS[level], message)


_PROCESSED = types.Status.PROCESSED
_STATUS = {Status.PROCESSED: types.Status.PROCESSED, Status.RETRY: types.Status.RETRY, Status.REJECT: types.Status.REJECT}

#: Built when the entry module is imported, that is at build time: the processor
#: object is part of the pre-initialised snapshot.
_GUEST = Guest(
    exported_processor(),
    Host(
        entries=wit_settings.entries,
        emit=_emit if _output is not None else None,
        log=_write_log if _log is not None else None,
        headers_enabled=_headers.enabled if _headers is not None else None,
        state=_HostStore() if _state is not None else None,
        output_limits=_output_limits if _output is not None else None,
        emit_many=_emit_many if _output is not None else None,
    ),
)


class Handler(exports.Handler):
    """The component's ``ferry:processor/handler`` export."""

    def process(self, batch: types.Batch) -> types.BatchResult:
        outcomes, failures = _GUEST.reply(batch.topic, batch.partition, batch.count, batch.records)
        if not failures:
            return types.BatchResult([_PROCESSED] * len(outcomes), [])
        statuses = [_STATUS[outcome.status] for outcome in outcomes]
        return types.BatchResult(statuses, [types.Failure(offset, reason) for offset, reason in failures])

    def assigned(self, partition: types.TopicPartition) -> None:
        _GUEST.assigned(partition.topic, partition.partition)

    def revoked(self, partition: types.TopicPartition) -> None:
        _GUEST.revoked(partition.topic, partition.partition)

    def self_test(self) -> None:
        error = _GUEST.self_test()
        if error is not None:
            raise Err(error)
