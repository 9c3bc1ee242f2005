"""A stateful processor: counts records per key in the host's keyed state and
emits each record's running count, as the Rust example in examples/counter does.

The counts live in ``ctx.state()``, the state of the record's input partition,
which the host keeps in a changelog topic and restores when the partition is
assigned: they survive traps, recycles, redeploys, restarts and rebalances. Each
count is stored as the Rust SDK's ``put_u64`` stores it, so this processor and the
Rust one can take over each other's state.
"""

from ferry_sdk import Context, Processor, Record, Settings, export_processor, transient

#: Where counts go unless the pipeline's `output_topic` setting says otherwise.
OUTPUT_TOPIC = "counts"


class Counter(Processor):
    """For each keyed record, emits (key, running count as decimal text); records
    without a key are passed over. A write refused by a state limit rejects the
    record (it would not fit on a retry either); a refused emit retries it."""

    def __init__(self) -> None:
        self.output_topic = OUTPUT_TOPIC

    def configure(self, settings: Settings) -> None:
        self.output_topic = settings.get("output_topic") or OUTPUT_TOPIC

    def process(self, record: Record, ctx: Context) -> None:
        key = record.key
        if key is None:
            return
        state = ctx.state()
        count = (state.get_u64(key) or 0) + 1
        state.put_u64(key, count)
        with transient():
            ctx.emit_kv(self.output_topic, key, str(count))


export_processor(Counter)
