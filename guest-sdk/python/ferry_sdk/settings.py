"""The pipeline's ``[pipeline.settings]``: string keys and values the operator sets,
read by the processor with typed accessors and clear errors."""

from __future__ import annotations

import json
from typing import Callable, Dict, Iterable, Iterator, Mapping, Optional, Tuple, TypeVar, Union, overload

T = TypeVar("T")

#: How to turn a setting's text into a value: ``int``, ``float``, ``bool``, ``str``
#: or any function that raises ``ValueError`` (or another exception) on bad input.
Parser = Callable[[str], T]


class SettingError(ValueError):
    """A setting that is missing or does not parse (same messages as the Rust SDK)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key

    @staticmethod
    def missing(key: str) -> "SettingError":
        """The pipeline does not set ``key``."""
        return SettingError(key, f"setting `{key}` is required but the pipeline does not set it")

    @staticmethod
    def invalid(key: str, value: str, reason: str) -> "SettingError":
        """``value`` does not parse as the type asked for."""
        return SettingError(key, f"setting `{key}` = {json.dumps(value, ensure_ascii=False)} is invalid: {reason}")


def parse_bool(text: str) -> bool:
    """``true`` or ``false``, exactly (``bool("false")`` would be true)."""
    if text == "true":
        return True
    if text == "false":
        return False
    raise ValueError("provided string was not `true` or `false`")


class Settings:
    """The settings a processor runs with::

        settings = Settings({"output_topic": "commissions", "rate_percent": "5"})
        settings.require("output_topic")        # "commissions"
        settings.parse("rate_percent", int)     # 5
        settings.parse_or("max_retries", 3)     # 3 (the type follows the default)
    """

    __slots__ = ("_values",)

    def __init__(self, values: Union[Mapping[str, str], Iterable[Tuple[str, str]], None] = None) -> None:
        pairs = values.items() if isinstance(values, Mapping) else (values or ())
        self._values: Dict[str, str] = dict(sorted(pairs))

    def get(self, key: str) -> Optional[str]:
        """The value of ``key``, if set."""
        return self._values.get(key)

    def require(self, key: str) -> str:
        """The value of ``key``; raises :class:`SettingError` naming it if unset."""
        value = self._values.get(key)
        if value is None:
            raise SettingError.missing(key)
        return value

    @overload
    def parse(self, key: str, parser: type[bool]) -> Optional[bool]: ...
    @overload
    def parse(self, key: str, parser: Parser[T]) -> Optional[T]: ...
    def parse(self, key: str, parser: Parser[T]) -> Optional[T]:
        """The value of ``key`` parsed with ``parser`` (surrounding whitespace
        removed), ``None`` if unset; raises :class:`SettingError` if it does not
        parse."""
        value = self._values.get(key)
        if value is None:
            return None
        convert: Callable[[str], object] = parse_bool if parser is bool else parser
        try:
            return convert(value.strip())  # type: ignore[return-value]
        except Exception as error:  # the parser's own message is the reason
            raise SettingError.invalid(key, value, str(error) or type(error).__name__) from error

    def parse_or(self, key: str, default: T, parser: Optional[Parser[T]] = None) -> T:
        """The value of ``key`` parsed as the type of ``default`` (or with
        ``parser``), or ``default`` if unset."""
        parsed = self.parse(key, parser or type(default))
        return default if parsed is None else parsed

    def parse_required(self, key: str, parser: Parser[T]) -> T:
        """The value of ``key`` parsed with ``parser``; raises if unset or invalid."""
        parsed = self.parse(key, parser)
        if parsed is None:
            raise SettingError.missing(key)
        return parsed

    def items(self) -> Iterator[Tuple[str, str]]:
        """Every setting, ordered by key."""
        return iter(self._values.items())

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Settings) and self._values == other._values

    def __repr__(self) -> str:
        return f"Settings({self._values!r})"
