"""Keyed state: a map of byte keys to byte values per input partition, kept by the
host across batches, restarts and rebalances.

A processor reaches the state of the batch's partition with :meth:`Context.state`
and declares the ``state`` capability in its ``pyproject.toml`` (only then is the
component built with the ``state`` import, and the pipeline needs a
``[pipeline.state]`` section). The writes of a batch take effect only if every
record of the batch finishes (processed or rejected); after a retry the whole batch
comes again against the state as it was before it.

With at-least-once delivery, records after the last commit run again after a crash,
against state that may already include them: make updates idempotent where that
matters. With exactly-once, state, outputs and offsets commit together.
"""

from __future__ import annotations

import json
from typing import Any, Callable, List, Optional, Protocol, Tuple

from . import limits
from .context import Data, to_bytes


class StateError(Exception):
    """The host refused a state write. The subclasses say why and carry the host's
    limit; their messages are the Rust SDK's ``StateError`` messages. Left uncaught
    in ``process`` it rejects the record (the write will not fit next time either)."""


class KeyTooLarge(StateError):
    """The key is longer than ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"state key exceeds the limit of {limit} bytes")


class ValueTooLarge(StateError):
    """The value is longer than ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"state value exceeds the limit of {limit} bytes")


class PartitionFull(StateError):
    """The partition's state would exceed ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"the partition's state would exceed its limit of {limit} bytes")


class TooManyWrites(StateError):
    """The batch already made ``limit`` writes (puts and deletes)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"the batch made its {limit} state writes already")


class Store(Protocol):
    """Where state calls go: the host's ``state`` import in a component, the
    harness's memory in tests. ``put`` and ``delete`` raise :class:`StateError`."""

    def get(self, key: bytes) -> Optional[bytes]: ...

    def put(self, key: bytes, value: bytes) -> None: ...

    def delete(self, key: bytes) -> None: ...

    def scan(self, prefix: bytes, limit: int) -> List[Tuple[bytes, bytes]]: ...


class State:
    """The keyed state of the input partition whose batch is being processed, from
    :meth:`Context.state`. Keys and values are bytes (text is encoded as UTF-8);
    the typed helpers encode as the Rust SDK's do, so processors in either language
    read each other's state::

        state = ctx.state()
        count = (state.get_u64(record.key) or 0) + 1
        state.put_u64(record.key, count)
    """

    __slots__ = ("_store",)

    def __init__(self, store: Store) -> None:
        self._store = store

    def get(self, key: Data) -> Optional[bytes]:
        """The value of ``key``, as this batch left it so far."""
        return self._store.get(to_bytes(key))

    def put(self, key: Data, value: Data) -> None:
        """Sets ``key`` to ``value``; raises :class:`StateError` over a limit."""
        self._store.put(to_bytes(key), to_bytes(value))

    def delete(self, key: Data) -> None:
        """Removes ``key`` (absent is fine); raises :class:`StateError` over a limit."""
        self._store.delete(to_bytes(key))

    def scan(self, prefix: Data = b"", limit: int = limits.MAX_SCAN_ENTRIES) -> List[Tuple[bytes, bytes]]:
        """Up to ``limit`` ``(key, value)`` pairs whose key starts with ``prefix``,
        in key order. The host returns at most 10,000 entries and 4 MiB per call:
        scan on from the last key returned for more."""
        if not 0 <= limit <= 0xFFFF_FFFF:
            raise ValueError(f"scan limit {limit} is not a u32")
        return self._store.scan(to_bytes(prefix), limit)

    def get_str(self, key: Data) -> Optional[str]:
        """The value of ``key`` as UTF-8 text (``None`` if absent or not UTF-8)."""
        value = self.get(key)
        try:
            return None if value is None else value.decode("utf-8")
        except UnicodeDecodeError:
            return None

    def get_u64(self, key: Data) -> Optional[int]:
        """The value of ``key`` as a little-endian u64 (``None`` if absent or not 8
        bytes), as the Rust SDK's ``put_u64`` writes it."""
        value = self.get(key)
        return None if value is None or len(value) != 8 else int.from_bytes(value, "little")

    def put_u64(self, key: Data, value: int) -> None:
        """Sets ``key`` to ``value`` as a little-endian u64."""
        if not 0 <= value < 1 << 64:
            raise ValueError(f"{value} is not a u64")
        self.put(key, value.to_bytes(8, "little"))

    def get_json(self, key: Data, default: Any = None) -> Any:
        """The value of ``key`` parsed as JSON, or ``default`` if absent (raises
        ``ValueError`` if the value is not JSON)."""
        value = self.get(key)
        return default if value is None else json.loads(value)

    def put_json(self, key: Data, value: Any) -> None:
        """Sets ``key`` to ``value`` as compact JSON (UTF-8)."""
        self.put(key, json.dumps(value, separators=(",", ":"), ensure_ascii=False))


class MemoryStore:
    """One partition's state during one batch, in memory: the host's limits,
    checked in the host's order. Writes go to a copy of the partition's map, which
    the harness keeps only if the batch finishes."""

    def __init__(
        self,
        entries: dict[bytes, bytes],
        require: Callable[[], None],
        partition_bytes: int = limits.STATE_BYTES_PER_PARTITION,
        writes_per_batch: int = limits.STATE_WRITES_PER_BATCH,
    ) -> None:
        self.entries = dict(entries)
        self._require = require
        self._partition_bytes = partition_bytes
        self._writes_per_batch = writes_per_batch
        self._bytes = sum(charge(k, v) for k, v in self.entries.items())
        self._writes = 0
        #: Whether the batch wrote anything.
        self.touched = False

    def get(self, key: bytes) -> Optional[bytes]:
        self._require()
        return self.entries.get(key)

    def _count_write(self) -> None:
        if self._writes >= self._writes_per_batch:
            raise TooManyWrites(self._writes_per_batch)
        self._writes += 1
        self.touched = True

    def put(self, key: bytes, value: bytes) -> None:
        self._require()
        if len(key) > limits.MAX_STATE_KEY_BYTES:
            raise KeyTooLarge(limits.MAX_STATE_KEY_BYTES)
        if len(value) > limits.MAX_STATE_VALUE_BYTES:
            raise ValueTooLarge(limits.MAX_STATE_VALUE_BYTES)
        old = self.entries.get(key)
        old_charge = 0 if old is None else charge(key, old)
        new_charge = charge(key, value)
        if new_charge > old_charge and self._bytes - old_charge + new_charge > self._partition_bytes:
            raise PartitionFull(self._partition_bytes)
        self._count_write()
        self._bytes += new_charge - old_charge
        self.entries[key] = bytes(value)

    def delete(self, key: bytes) -> None:
        self._require()
        if len(key) > limits.MAX_STATE_KEY_BYTES:
            raise KeyTooLarge(limits.MAX_STATE_KEY_BYTES)
        self._count_write()
        old = self.entries.pop(key, None)
        if old is not None:
            self._bytes -= charge(key, old)

    def scan(self, prefix: bytes, limit: int) -> List[Tuple[bytes, bytes]]:
        self._require()
        out: List[Tuple[bytes, bytes]] = []
        size = 0
        for key in sorted(k for k in self.entries if k.startswith(prefix)):
            if len(out) >= min(limit, limits.MAX_SCAN_ENTRIES):
                break
            value = self.entries[key]
            size += len(key) + len(value)
            if out and size > limits.MAX_SCAN_BYTES:
                break
            out.append((key, value))
        return out


def charge(key: bytes, value: bytes) -> int:
    """What an entry costs its partition, as the host counts it."""
    return limits.STATE_ENTRY_COST + len(key) + len(value)
