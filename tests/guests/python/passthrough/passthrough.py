"""Test guest: the Python counterpart of examples/passthrough, the benchmark guest.
Every record is processed; nothing is emitted or logged, and it imports no ferry
capability, so its cost is the boundary and the SDK itself (the SDK still decodes
and checks the whole batch before ``process_batch`` sees it)."""

from __future__ import annotations

from typing import List

from ferry_sdk import Batch, Context, Outcome, Processor, Record, export_processor


class Passthrough(Processor):
    """Marks every record processed."""

    def process(self, record: Record, ctx: Context) -> None:
        pass

    def process_batch(self, batch: Batch, ctx: Context) -> List[Outcome]:
        """Answers the whole batch at once without looking at the records."""
        return [Outcome.processed()] * len(batch)


export_processor(Passthrough)
