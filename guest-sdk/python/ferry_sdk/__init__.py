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

__all__ = [
    "PROCESSED",
    "Batch",
    "CapabilityError",
    "Context",
    "Data",
    "EmitError",
    "Fault",
    "Level",
    "Outcome",
    "OverBudget",
    "Output",
    "PerPartition",
    "ProcessingError",
    "Processor",
    "Record",
    "Reject",
    "Retry",
    "SettingError",
    "Settings",
    "Status",
    "TooLarge",
    "TooMany",
    "TopicNotAllowed",
    "TopicPartition",
    "UnknownSource",
    "export_processor",
    "rejecting",
    "transient",
]
