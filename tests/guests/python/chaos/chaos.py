"""Test guest: misbehaves on request, like the Rust guest in tests/guests/chaos.
Each record's value (UTF-8) picks what happens:

=================  =========================================================
value              behaviour
=================  =========================================================
``loop``           spins forever (epoch deadline)
``oom``            allocates 1 MiB chunks forever, touching every page
                   (memory cap; CPython raises MemoryError, a fault: trap)
``recurse``        unbounded Python recursion: RecursionError at CPython's
                   limit, which the SDK treats as a fault (trap)
``recurse-native`` recursion in C (``repr`` of a deeply nested list) with the
                   recursion limit lifted: the interpreter's C stack
``panic``          raises ``ferry_sdk.Fault`` (trap, like a Rust panic)
``throw``          same as ``panic``
``error``          an ordinary uncaught exception (``KeyError``): the SDK
                   rejects the record with ``"KeyError: 'missing'"``
``sleep``          ``time.sleep(120)``: a blocking WASI wait the epoch
                   deadline cannot interrupt; the host must bound it
``block:<ms>``     logs ``blocking for <ms> ms``, then sleeps that long with
                   ``time.sleep`` (a blocking WASI wait, as the Rust guest's
                   ``block:<ms>``), then processed
``sleep:<ms>``     busy-waits that many milliseconds, then processed
``retry``          ``Retry("asked to retry")``
``reject``         ``Reject("asked to reject")``
``emit:<topic>``   emits the record's key and value to ``<topic>``; ``Retry``
                   if refused
``emit-reject:<t>`` emits as ``emit:<t>``, then ``Reject``
``emit-retry-once:<t>``  emits as ``emit:<t>``, then ``Retry`` the first time
                   this instance sees the record; processed after that
``log:<message>``  logs ``<message>`` at info level
anything else      processed
=================  =========================================================
"""

from __future__ import annotations

import sys
import time

from ferry_sdk import Context, EmitError, Fault, Output, Processor, Record, Reject, Retry, export_processor


def spin() -> None:
    n = 0
    while True:
        n += 1


def hog() -> None:
    chunks = []
    while True:
        chunk = bytearray(1 << 20)
        chunk[::4096] = b"\xa5" * ((1 << 20) // 4096)  # touch every page
        chunks.append(chunk)


def recurse(depth: int) -> int:
    return recurse(depth + 1) * 3 + depth


def recurse_native() -> None:
    sys.setrecursionlimit(1 << 30)
    nested: list[object] = []
    # Deep enough for any C stack (a few MiB of lists), small enough to build well
    # within a batch's time limit and the default memory limit.
    for _ in range(200_000):
        nested = [nested]
    repr(nested)


def busy_wait(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass


class Chaos(Processor):
    """The chaos processor."""

    def __init__(self) -> None:
        super().__init__()
        #: (partition, offset) of the records ``emit-retry-once`` asked to retry.
        self.retried: set[tuple[int, int]] = set()

    def process(self, record: Record, ctx: Context) -> None:
        command = (record.value or b"").decode("utf-8", "replace")
        verb, _, topic = command.partition(":")
        if verb in ("emit", "emit-reject", "emit-retry-once"):
            try:
                ctx.emit(Output(topic, key=record.key, value=record.value))
            except EmitError as error:
                raise Retry(f"emit refused: {error}") from error
            if verb == "emit-reject":
                raise Reject("asked to reject after emitting")
            if verb == "emit-retry-once" and (record.partition, record.offset) not in self.retried:
                self.retried.add((record.partition, record.offset))
                raise Retry("asked to retry after emitting")
            return
        if command.startswith("log:"):
            ctx.info(command[4:])
            return
        if command.startswith("block:"):
            try:
                ms = int(command[6:].strip())
            except ValueError:
                raise Reject(f"bad block duration {command[6:]!r}") from None
            ctx.info(f"blocking for {ms} ms")
            time.sleep(ms / 1000)
            return
        if command.startswith("sleep:"):
            try:
                ms = int(command[6:].strip())
            except ValueError:
                raise Reject(f"bad sleep duration {command[6:]!r}") from None
            busy_wait(ms / 1000)
            return
        if command == "loop":
            spin()
        elif command == "oom":
            hog()
        elif command == "recurse":
            recurse(0)
        elif command == "recurse-native":
            recurse_native()
        elif command in ("panic", "throw"):
            raise Fault(f"chaos: asked to {command} at offset {record.offset}")
        elif command == "error":
            {}["missing"]  # noqa: B018 - the KeyError is the point
        elif command == "sleep":
            time.sleep(120)
        elif command == "retry":
            raise Retry("asked to retry")
        elif command == "reject":
            raise Reject("asked to reject")


export_processor(Chaos)
