"""The host's default per-batch limits.

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
