"""Counts records per key in state and emits (key, count), as the counter example
does; a record whose value is ``fill`` instead writes values under keys of its own
until the host refuses one, and emits (key, what was refused:
``<error class>:<limit>:<message>``). The record is processed: the writes that fit
stay. Later writes that need more room are refused too; a refused count rejects its
record (uncaught :class:`ferry_sdk.StateError`)."""

from ferry_sdk import Context, Processor, Record, State, StateError, export_processor

OUTPUT_TOPIC = "counts"
#: More writes than any partition limit under test allows, so the loop ends in a refusal.
MOST_FILLS = 1_000_000


def fill(state: State, size: int) -> StateError:
    """Writes values of ``size`` bytes under new short keys until one is refused."""
    for i in range(MOST_FILLS):
        try:
            state.put(b"f%d-%d" % (size, i), b"\x00" * size)
        except StateError as error:
            return error
    raise AssertionError("the host never refused a write")


class Filler(Processor):
    def __init__(self) -> None:
        self.output_topic = OUTPUT_TOPIC

    def configure(self, settings) -> None:  # type: ignore[no-untyped-def]
        self.output_topic = settings.get("output_topic") or OUTPUT_TOPIC

    def process(self, record: Record, ctx: Context) -> None:
        key = record.key or b""
        state = ctx.state()
        if record.value == b"fill":
            # 1 KiB values, then empty ones, so that less room is left than any
            # new key needs.
            fill(state, 1024)
            refused = fill(state, 0)
            ctx.emit_kv(self.output_topic, key, f"{type(refused).__name__}:{refused.limit}:{refused}")
            return
        count = (state.get_u64(key) or 0) + 1
        state.put_u64(key, count)
        ctx.emit_kv(self.output_topic, key, str(count))


export_processor(Filler)
