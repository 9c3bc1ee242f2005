"""The class a tenant implements, and what a record's handling can end in."""

from __future__ import annotations

import contextlib
import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator, List, Optional, Type, TypeVar

from .record import Batch, Record, TopicPartition

if TYPE_CHECKING:
    from .context import Context
    from .settings import Settings


class Status(enum.Enum):
    """What happened to one record (the WIT ``status``)."""

    PROCESSED = "processed"
    RETRY = "retry"
    REJECT = "reject"


@dataclass(frozen=True)
class Outcome:
    """What happened to one record, with the reason for a retry or reject.

    Compare with ``==``: ``Outcome.reject("bad") == Outcome.reject("bad")``.
    """

    status: Status
    reason: str = ""

    @staticmethod
    def processed() -> "Outcome":
        """Done: the host may commit past this record and publishes its outputs."""
        return PROCESSED

    @staticmethod
    def retry(reason: str) -> "Outcome":
        """Not done, try again later; the record's outputs are dropped."""
        return Outcome(Status.RETRY, reason)

    @staticmethod
    def reject(reason: str) -> "Outcome":
        """Never going to work: dead-letter or halt by policy; outputs are dropped."""
        return Outcome(Status.REJECT, reason)

    @property
    def is_processed(self) -> bool:
        """True for a processed record."""
        return self.status is Status.PROCESSED

    def __str__(self) -> str:
        return "processed" if self.is_processed else f"{self.status.value}: {self.reason}"


PROCESSED = Outcome(Status.PROCESSED)


class ProcessingError(Exception):
    """Why a record was not processed: raise it from :meth:`Processor.process`.

    Raise :class:`Retry` for errors that may pass (a downstream is unavailable) and
    :class:`Reject` for records that will never work. Any other ``Exception`` that
    escapes ``process`` rejects the record too, with ``"TypeName: message"`` as the
    reason, like the Rust SDK's ``?`` on any error.
    """

    transient: bool = False

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


class Retry(ProcessingError):
    """Try the record again later (the host backs off, then redelivers it)."""

    transient = True


class Reject(ProcessingError):
    """Give up on the record: the host dead-letters it or halts, by policy."""

    transient = False


class Fault(BaseException):
    """Abort the whole batch: the component traps, like a panic in a Rust guest.

    The host throws the instance away, and the batch's records are delivered again
    to a fresh one. It derives from ``BaseException`` so that ``except Exception``
    in tenant code does not swallow it. ``MemoryError`` and ``RecursionError`` are
    treated the same way: they are the interpreter's out-of-memory and
    stack-overflow, which the host contains as traps in every guest language.
    """


class CapabilityError(Fault):
    """The processor used a host interface it does not declare in its project
    (``[tool.ferry] capabilities``). A bug in the processor, so it aborts the batch
    rather than dead-lettering records."""


#: Exceptions the SDK never turns into a reject.
_FAULTS = (MemoryError, RecursionError)


def describe(error: BaseException) -> str:
    """The reason recorded for an exception that ended a record."""
    from .context import EmitError
    from .http import HttpError
    from .settings import SettingError
    from .state import StateError

    if isinstance(error, (ProcessingError, EmitError, SettingError, StateError, HttpError)):
        return str(error)
    message = str(error)
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def outcome_of(call: Callable[[], object]) -> Outcome:
    """Runs ``call`` and turns what it raised into an outcome (faults propagate)."""
    try:
        call()
    except ProcessingError as error:
        return Outcome(Status.RETRY if error.transient else Status.REJECT, error.reason)
    except _FAULTS:
        raise
    except Exception as error:
        return Outcome.reject(describe(error))
    return PROCESSED


@contextlib.contextmanager
def transient() -> Iterator[None]:
    """Turns any ``Exception`` raised inside the block into :class:`Retry`::

        with transient():
            call_downstream()
    """
    try:
        yield
    except ProcessingError:
        raise
    except _FAULTS:
        raise
    except Exception as error:
        raise Retry(describe(error)) from error


@contextlib.contextmanager
def rejecting(context: str) -> Iterator[None]:
    """Turns any ``Exception`` raised inside the block into :class:`Reject` with
    ``"{context}: {error}"`` as the reason::

        with rejecting("malformed order"):
            order = json.loads(record.value)
    """
    try:
        yield
    except ProcessingError:
        raise
    except _FAULTS:
        raise
    except Exception as error:
        raise Reject(f"{context}: {error}") from error


class Processor:
    """A stream processor. Subclass it, override :meth:`process` (or
    :meth:`process_batch`), and export the class with :func:`export_processor`.

    **Lifetime and state.** A component keeps one instance, created with no
    arguments (at build time: it is part of the pre-initialised snapshot) and
    :meth:`configure`\\ d with the pipeline's settings when the instance first needs
    it. Attributes carry state from batch to batch, but only for the life of one
    WebAssembly instance: the host replaces the instance after any trap, when its
    memory grew too large, on redeploy and on restart, and records not yet committed
    are delivered again. State must be rebuildable from the stream (or a cache).

    One instance serves every partition its pipeline owns: keep per-partition state
    in a :class:`ferry_sdk.PerPartition` and drop it in :meth:`revoked`.
    """

    def process(self, record: Record, ctx: "Context") -> None:
        """Handles one record; returning marks it processed. Raise :class:`Retry`
        or :class:`Reject` (or any ``Exception``: reject) otherwise. Outputs emitted
        through ``ctx`` belong to this record and are published only if it ends
        processed."""
        raise NotImplementedError(f"{type(self).__name__} implements neither process nor process_batch")

    def process_batch(self, batch: Batch, ctx: "Context") -> List[Outcome]:
        """Handles a batch and returns exactly one outcome per record, in order.

        The default calls :meth:`process` for each record. Override it to work on
        the whole batch at once; here outputs belong to the whole batch (published
        only if every record ends processed) unless emitted inside
        :meth:`Context.for_record`. Exceptions that escape it abort the batch
        (the component traps).
        """
        # ``ctx.for_record`` and ``outcome_of`` inlined: a context manager and a
        # closure per record cost more than a passthrough's whole record.
        process = self.process
        outcomes: List[Outcome] = []
        append = outcomes.append
        outer = ctx._source
        try:
            for record in batch:
                ctx._source = record
                try:
                    process(record, ctx)
                except ProcessingError as error:
                    append(Outcome(Status.RETRY if error.transient else Status.REJECT, error.reason))
                except _FAULTS:
                    raise
                except Exception as error:
                    append(Outcome(Status.REJECT, describe(error)))
                else:
                    append(PROCESSED)
        finally:
            ctx._source = outer
        return outcomes

    def configure(self, settings: "Settings") -> None:
        """Reads the pipeline's settings, once per instance, before anything else
        runs. Raising is a configuration problem: the host refuses the deploy (the
        self-test configures too) and faults batches until it is fixed."""

    def assigned(self, partition: TopicPartition) -> None:
        """A partition's first batch in this instance is coming."""

    def revoked(self, partition: TopicPartition) -> None:
        """A partition moved to another member: forget what was kept for it."""

    def self_test(self) -> None:
        """A check the host runs on a fresh, configured instance before it switches
        to a new version; raising refuses the deploy (the message is the reason)."""


P = TypeVar("P", bound=Type[Processor])

_exported: Optional[Type[Processor]] = None


def export_processor(cls: P) -> P:
    """Makes ``cls`` the component's processor. Call it once, at module level (or
    use it as a class decorator). Natively it only records the class."""
    global _exported
    if not (isinstance(cls, type) and issubclass(cls, Processor)):
        raise TypeError(f"export_processor expects a Processor subclass, got {cls!r}")
    if _exported is not None and _exported is not cls:
        raise RuntimeError(f"export_processor called twice: {_exported.__name__} and {cls.__name__}")
    _exported = cls
    return cls


def exported_processor() -> Type[Processor]:
    """The class given to :func:`export_processor` (raises if there is none)."""
    if _exported is None:
        raise RuntimeError("no processor is exported: call ferry_sdk.export_processor(YourProcessor) in your module")
    return _exported
