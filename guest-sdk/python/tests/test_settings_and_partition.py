"""Settings accessors and their messages; per-partition state."""

import pytest

from ferry_sdk import PerPartition, SettingError, Settings, TopicPartition


def test_settings_accessors() -> None:
    settings = Settings({"output_topic": "commissions", "rate_percent": " 5 ", "on": "true", "ratio": "0.5"})
    assert settings.get("output_topic") == "commissions"
    assert settings.get("nope") is None
    assert settings.require("output_topic") == "commissions"
    assert settings.parse("rate_percent", int) == 5
    assert settings.parse("unset", int) is None
    assert settings.parse_or("max_retries", 3) == 3
    assert settings.parse_or("rate_percent", 1) == 5
    assert settings.parse("on", bool) is True
    assert settings.parse_or("ratio", 1.0) == 0.5
    assert settings.parse_required("rate_percent", int) == 5
    assert list(settings.items())[0] == ("on", "true")
    assert len(settings) == 4 and "on" in settings
    assert Settings([("b", "2"), ("a", "1")]) == Settings({"a": "1", "b": "2"})


def test_setting_errors_read_like_the_rust_sdk() -> None:
    with pytest.raises(SettingError) as missing:
        Settings().require("region")
    assert str(missing.value) == "setting `region` is required but the pipeline does not set it"
    assert missing.value.key == "region"
    with pytest.raises(SettingError) as invalid:
        Settings({"rate_percent": "five"}).parse("rate_percent", int)
    assert str(invalid.value).startswith('setting `rate_percent` = "five" is invalid: ')
    with pytest.raises(SettingError, match="is invalid: provided string was not `true` or `false`"):
        Settings({"on": "yes"}).parse_or("on", False)
    with pytest.raises(SettingError, match="is required"):
        Settings().parse_required("n", int)


def test_per_partition_state() -> None:
    counts: PerPartition[int] = PerPartition(int)
    counts.set("clicks", 0, counts.entry("clicks", 0) + 1)
    counts.set("clicks", 1, 5)
    lists: PerPartition[list[str]] = PerPartition(list)
    lists.entry("t", 2).append("x")
    assert lists.get("t", 2) == ["x"]
    assert counts.revoke(TopicPartition("clicks", 1)) == 5
    assert counts.revoke(TopicPartition("clicks", 9)) is None
    assert counts.get("clicks", 0) == 1
    assert counts.get("clicks", 1) is None
    assert dict(counts.items()) == {TopicPartition("clicks", 0): 1}
    assert len(counts) == 1
