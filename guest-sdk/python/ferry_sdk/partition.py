"""State kept per input partition, dropped when the partition is revoked."""

from __future__ import annotations

from typing import Callable, Dict, Generic, Iterator, Optional, Tuple, TypeVar

from .record import Record, TopicPartition

T = TypeVar("T")


class PerPartition(Generic[T]):
    """One state per input partition, created on first use by ``factory``.

    A processor instance serves every partition its pipeline owns; keeping state
    here and calling :meth:`revoke` from :meth:`Processor.revoked` makes sure one
    partition's state is never mixed with another's, and never outlives its
    ownership::

        counts: PerPartition[int] = PerPartition(int)
        counts.set("clicks", 0, counts.entry("clicks", 0) + 1)
        totals: PerPartition[dict[str, int]] = PerPartition(dict)
        totals.of(record)["alice"] = 3
    """

    __slots__ = ("_factory", "_states")

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._states: Dict[Tuple[str, int], T] = {}

    def entry(self, topic: str, partition: int) -> T:
        """The state of ``topic``/``partition``, created if new."""
        key = (topic, partition)
        try:
            return self._states[key]
        except KeyError:
            state = self._states[key] = self._factory()
            return state

    def of(self, record: Record) -> T:
        """The state of ``record``'s partition, created if new."""
        return self.entry(record.topic, record.partition)

    def get(self, topic: str, partition: int) -> Optional[T]:
        """The state of ``topic``/``partition``, if any."""
        return self._states.get((topic, partition))

    def set(self, topic: str, partition: int, state: T) -> None:
        """Replaces the state of ``topic``/``partition`` (for immutable states)."""
        self._states[(topic, partition)] = state

    def revoke(self, partition: TopicPartition) -> Optional[T]:
        """Drops the state of a revoked partition, returning it."""
        return self._states.pop((partition.topic, partition.partition), None)

    def items(self) -> Iterator[Tuple[TopicPartition, T]]:
        """Every partition with state, and its state."""
        return ((TopicPartition(t, p), s) for (t, p), s in self._states.items())

    def __len__(self) -> int:
        return len(self._states)
