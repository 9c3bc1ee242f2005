"""Write ferry stream processors in Python.

A processor receives batches of Kafka records from one topic-partition and answers
one outcome per record; the host commits an input offset only once that record and
every record before it is finished. Subclass :class:`Processor`, export it with
:func:`export_processor`, and build the project into a component with
``guest-sdk/python/build.py``::

    from ferry_sdk import Context, Processor, Record, Reject, export_processor

    class Shout(Processor):
        \"\"\"Forwards records to `shouted`, with the value upper-cased.\"\"\"

        def process(self, record: Record, ctx: Context) -> None:
            if record.value is None:
                raise Reject("tombstones are not supported")
            ctx.emit_value("shouted", record.value.upper())

    export_processor(Shout)

Natively the same code runs under pytest with :mod:`ferry_sdk.testing`.

Keyed state (``ctx.state()``, for a project that declares the ``state``
capability) is a map per input partition that the host keeps in a changelog topic:
it survives restarts, redeploys and rebalances.

Outputs belong to records: the host publishes what a record emitted only if the
record ends processed, so a record that is retried, rejected or crashes the guest
leaves no output behind.
"""

from .context import Context, Data, EmitError, Level, OverBudget, Output, TooLarge, TooMany, TopicNotAllowed, UnknownSource
from .partition import PerPartition
from .processor import (
    PROCESSED,
    CapabilityError,
    Fault,
    Outcome,
    ProcessingError,
    Processor,
    Reject,
    Retry,
    Status,
    export_processor,
    rejecting,
    transient,
)
from .record import Batch, Record, TopicPartition
from .settings import SettingError, Settings
from .state import KeyTooLarge, PartitionFull, State, StateError, TooManyWrites, ValueTooLarge

__all__ = [
    "PROCESSED",
    "Batch",
    "CapabilityError",
    "Context",
    "Data",
    "EmitError",
    "Fault",
    "KeyTooLarge",
    "Level",
    "Outcome",
    "OverBudget",
    "Output",
    "PartitionFull",
    "PerPartition",
    "ProcessingError",
    "Processor",
    "Record",
    "Reject",
    "Retry",
    "SettingError",
    "Settings",
    "State",
    "StateError",
    "Status",
    "TooLarge",
    "TooMany",
    "TooManyWrites",
    "TopicNotAllowed",
    "TopicPartition",
    "UnknownSource",
    "ValueTooLarge",
    "export_processor",
    "rejecting",
    "transient",
]
