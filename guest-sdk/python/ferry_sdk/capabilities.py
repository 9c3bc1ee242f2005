"""The host interfaces a processor may use, which it declares in its project.

A Python component imports every interface of the world it is built for, whether
the code calls it or not, so "capabilities follow use" (as in the Rust SDK) cannot
hold. Instead a project declares what it uses in ``pyproject.toml``::

    [tool.ferry]
    capabilities = ["output", "log"]

and the build targets a world with exactly those imports, so the host's grants
(``output_topics``, ``allow_log``, ``[pipeline.state]``, ``[pipeline.http]``) and its choice to send
headers apply as they do to a Rust guest. ``settings`` is always imported (every
pipeline may have settings). A processor that does not declare ``state`` is built
without the import, so its component is the same as before state existed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final, FrozenSet, Iterable

from .processor import CapabilityError

#: Every capability a processor can declare.
ALL: Final[FrozenSet[str]] = frozenset({"log", "output", "headers", "state", "http"})

_USES: Final = {
    "log": "logs",
    "output": "emits records",
    "headers": "reads record headers",
    "state": "uses keyed state",
    "http": "sends HTTP requests",
}


def validate(names: Iterable[str]) -> FrozenSet[str]:
    """``names`` as a set, or ``ValueError`` naming an unknown one."""
    declared = frozenset(names)
    unknown = sorted(declared - ALL)
    if unknown:
        raise ValueError(f"unknown capabilities {unknown}: a processor can declare {sorted(ALL)}")
    return declared


def missing(capability: str) -> CapabilityError:
    """The error for using a capability the project does not declare."""
    return CapabilityError(
        f"this processor {_USES[capability]} but does not declare the `{capability}` capability: "
        f'add "{capability}" to `capabilities` under [tool.ferry] in its pyproject.toml'
    )


def declared(project_dir: str | Path) -> FrozenSet[str]:
    """The capabilities a project declares in its ``pyproject.toml``."""
    import tomllib  # here, so components do not carry it

    path = Path(project_dir) / "pyproject.toml"
    with path.open("rb") as file:
        ferry = tomllib.load(file).get("tool", {}).get("ferry", {})
    if "capabilities" not in ferry:
        raise ValueError(f"{path} has no `capabilities` under [tool.ferry] (a list of {sorted(ALL)}, maybe empty)")
    return validate(ferry["capabilities"])
