"""A ferry processor: forwards each record's value, upper-cased, to the topic the
pipeline sets as `output_topic`, keyed like the input. Replace it with yours."""

from ferry_sdk import Context, Processor, Record, Reject, Settings, export_processor


class Upper(Processor):
    """Upper-cases values."""

    def __init__(self) -> None:
        self.output_topic = ""

    def configure(self, settings: Settings) -> None:
        # Missing: "setting `output_topic` is required but the pipeline does not set it".
        self.output_topic = settings.require("output_topic")

    def process(self, record: Record, ctx: Context) -> None:
        text = record.value_str()
        if text is None:
            raise Reject("tombstones are not supported")
        ctx.debug(f"offset {record.offset}")
        if record.key is None:
            ctx.emit_value(self.output_topic, text.upper())
        else:
            ctx.emit_kv(self.output_topic, record.key, text.upper())


export_processor(Upper)
