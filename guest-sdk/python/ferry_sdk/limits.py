"""The host's default per-batch and state limits.

The same numbers as the Rust SDK's ``ferry_sdk::limits`` (which the host takes its
defaults from), so a test that passes under :class:`ferry_sdk.testing.Harness` does
not first fail on a limit in production.
"""

from typing import Final

#: Most output records one batch may emit.
MAX_OUTPUTS_PER_BATCH: Final[int] = 100_000
#: Largest output record (key + value + header names and values), in bytes.
MAX_OUTPUT_BYTES: Final[int] = 1 << 20
#: Most output bytes (the sum of record sizes) one batch may emit.
OUTPUT_BYTES_PER_BATCH: Final[int] = 16 << 20
#: Most bytes of state one input partition may hold: each entry counts its key and
#: value plus :data:`STATE_ENTRY_COST`.
STATE_BYTES_PER_PARTITION: Final[int] = 64 << 20
#: What each state entry costs its partition on top of its key and value.
STATE_ENTRY_COST: Final[int] = 128
#: Longest state key, in bytes.
MAX_STATE_KEY_BYTES: Final[int] = 4 << 10
#: Longest state value, in bytes.
MAX_STATE_VALUE_BYTES: Final[int] = 512 << 10
#: Most state writes (puts and deletes) one batch may make.
STATE_WRITES_PER_BATCH: Final[int] = 100_000
#: Most entries one state scan returns.
MAX_SCAN_ENTRIES: Final[int] = 10_000
#: Most key and value bytes one state scan returns (at least one entry is returned).
MAX_SCAN_BYTES: Final[int] = 4 << 20
