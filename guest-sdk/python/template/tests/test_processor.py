"""Unit tests: the processor under the host's default limits, natively."""

from pathlib import Path

import pytest

from ferry_sdk import Outcome, SettingError
from ferry_sdk.testing import Harness, TestBatch
from processor import Upper

PROJECT = Path(__file__).resolve().parent.parent


def harness() -> Harness:
    """The pipeline this processor expects: its grant, its setting, its declared capabilities."""
    return Harness().allow_topic("shouted").setting("output_topic", "shouted").declared_by(PROJECT)


def test_upper_cases_values() -> None:
    h = harness()
    run = h.run(h.processor(Upper), TestBatch("in", 0).record("k", "hi").tombstone("gone"))
    assert run.outcomes == [Outcome.processed(), Outcome.reject("tombstones are not supported")]
    assert [(e.topic, e.key_str(), e.value_str()) for e in run.emitted] == [("shouted", "k", "HI")]


def test_the_output_topic_is_required() -> None:
    with pytest.raises(SettingError, match="setting `output_topic` is required"):
        Harness().processor(Upper)
