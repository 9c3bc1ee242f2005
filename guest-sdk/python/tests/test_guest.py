"""The component glue, driven by a fake host (the generated bindings are only
present in a component)."""

from typing import List, Optional, Sequence, Tuple

import pytest

from ferry_sdk import CapabilityError, Context, Fault, Outcome, Processor, Record, Reject, Settings, TooMany
from ferry_sdk._guest import Guest, Host
from ferry_sdk.context import Level, WireOutput
from ferry_sdk.wire import BatchEncoder


class FakeHost:
    def __init__(self, settings: Sequence[Tuple[str, str]] = ()) -> None:
        self.settings = list(settings)
        self.settings_reads = 0
        self.emitted: List[Tuple[Optional[int], WireOutput]] = []
        self.logs: List[Tuple[Level, str]] = []
        self.headers_asked = 0

    def entries(self) -> Sequence[Tuple[str, str]]:
        self.settings_reads += 1
        return self.settings

    def emit(self, source: Optional[int], output: WireOutput) -> None:
        if output.topic == "full":
            raise TooMany()
        self.emitted.append((source, output))

    def log(self, level: Level, message: str) -> None:
        self.logs.append((level, message))

    def headers_enabled(self) -> bool:
        self.headers_asked += 1
        return True

    def bindings(self, *declared: str) -> Host:
        return Host(
            entries=self.entries,
            emit=self.emit if "output" in declared else None,
            log=self.log if "log" in declared else None,
            headers_enabled=self.headers_enabled if "headers" in declared else None,
        )


class Tagger(Processor):
    created = 0

    def __init__(self) -> None:
        Tagger.created += 1
        self.tag = "?"

    def configure(self, settings: Settings) -> None:
        self.tag = settings.require("tag")

    def process(self, record: Record, ctx: Context) -> None:
        command = record.value_str() or ""
        if command == "header":
            ctx.emit_value("out", record.header("h") or b"-")
        elif command == "full":
            ctx.emit_value("full", "x")
        elif command == "log":
            ctx.warn(self.tag)
        elif command == "reject":
            raise Reject("no")
        else:
            ctx.emit_kv("out", self.tag, command)

    def self_test(self) -> None:
        if self.tag != "ok":
            raise RuntimeError(f"tag is {self.tag}")


def encode(*values: str, first: int = 40, headers: Sequence[Tuple[str, Optional[bytes]]] = ()) -> Tuple[int, bytes]:
    encoder = BatchEncoder()
    for i, value in enumerate(values):
        encoder.push(first + i, None, None, value.encode(), headers)
    return encoder.count, encoder.bytes()


def test_configures_once_on_first_use_and_attributes_outputs() -> None:
    host = FakeHost([("tag", "t1")])
    guest = Guest(Tagger, host.bindings("output", "log"))
    assert host.settings_reads == 0  # constructed (at build time) but not configured
    results = guest.process("in", 0, *encode("a", "reject", "full", "log"))
    assert results == [
        (40, Outcome.processed()),
        (41, Outcome.reject("no")),
        (42, Outcome.reject("batch emitted more records than allowed")),
        (43, Outcome.processed()),
    ]
    assert [(s, o.topic, o.key, o.value) for s, o in host.emitted] == [(40, "out", b"t1", b"a")]
    assert host.logs == [(Level.WARN, "t1")]
    guest.process("in", 0, *encode("b"))
    assert host.settings_reads == 1


def test_headers_are_asked_for_once_and_need_the_capability() -> None:
    host = FakeHost([("tag", "t")])
    guest = Guest(Tagger, host.bindings("output", "headers"))
    guest.process("in", 0, *encode("header", "header", headers=[("h", b"v")]))
    guest.process("in", 0, *encode("header", headers=[("h", b"v")]))
    assert host.headers_asked == 1
    assert [o.value for _, o in host.emitted] == [b"v", b"v", b"v"]

    undeclared = Guest(Tagger, FakeHost([("tag", "t")]).bindings("output"))
    with pytest.raises(CapabilityError, match="`headers` capability"):
        undeclared.process("in", 0, *encode("header"))
    no_output = Guest(Tagger, FakeHost([("tag", "t")]).bindings())
    with pytest.raises(CapabilityError, match='add "output" to `capabilities`'):
        no_output.process("in", 0, *encode("a"))


def test_bad_settings_and_corrupt_batches_are_faults() -> None:
    guest = Guest(Tagger, FakeHost().bindings("output"))
    with pytest.raises(Fault, match="refused its settings: setting `tag` is required"):
        guest.process("in", 0, *encode("a"))
    count, records = encode("a")
    with pytest.raises(Fault, match="corrupt batch"):
        Guest(Tagger, FakeHost([("tag", "t")]).bindings()).process("in", 0, count + 1, records)


def test_self_test_runs_on_a_fresh_configured_instance() -> None:
    before = Tagger.created
    assert Guest(Tagger, FakeHost([("tag", "ok")]).bindings()).self_test() is None
    assert Guest(Tagger, FakeHost([("tag", "no")]).bindings()).self_test() == "tag is no"
    assert "refused its settings" in (Guest(Tagger, FakeHost().bindings()).self_test() or "")
    assert Tagger.created == before + 6  # one kept per guest, one fresh per self-test


def test_outcomes_past_the_batch_get_offset_minus_one() -> None:
    class Extra(Processor):
        def process_batch(self, batch, ctx):  # type: ignore[no-untyped-def]
            return [Outcome.processed(), Outcome.reject("extra")]

    results = Guest(Extra, FakeHost().bindings()).process("in", 0, *encode("a"))
    assert results == [(40, Outcome.processed()), (-1, Outcome.reject("extra"))]


def test_lifecycle_reaches_the_processor() -> None:
    class Told(Processor):
        def __init__(self) -> None:
            self.told: List[str] = []

        def assigned(self, partition) -> None:  # type: ignore[no-untyped-def]
            self.told.append(f"+{partition}")

        def revoked(self, partition) -> None:  # type: ignore[no-untyped-def]
            self.told.append(f"-{partition}")

    guest = Guest(Told, FakeHost().bindings())
    guest.assigned("t", 1)
    guest.revoked("t", 1)
    assert guest.processor().told == ["+t/1", "-t/1"]  # type: ignore[attr-defined]
