"""codes.py is the one table of script return codes: it must say exactly what the Lua headers
say (every "N = meaning" of a `Returns:` paragraph is in the table, for that script, and every
code of the table is in its script's header), and no caller may compare a reply to a literal."""

from __future__ import annotations

import re
from enum import IntEnum
from pathlib import Path

import luasrc
import pytest

from jobq import codes, errors
from jobq.scripts import SCRIPT_NAMES

SRC_DIR = Path(codes.__file__).parent


def returns_paragraph(name: str) -> str:
    """The `Returns:` line of a script's header and its indented continuation lines."""
    return luasrc.header_paragraph(name, "Returns")


def header_codes(name: str) -> set[int]:
    """Every code the header names as "N = meaning"."""
    return {int(c) for c in re.findall(r"(?<![\w.-])(-?\d+) = ", returns_paragraph(name))}


def table_codes(name: str) -> set[int]:
    return {int(m) for enum in codes.BY_SCRIPT.get(name, ()) for m in enum}


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_table_matches_the_script_header(name: str) -> None:
    assert header_codes(name) == table_codes(name), (name, returns_paragraph(name))


def test_table_names_only_scripts_and_refusals_are_shared() -> None:
    assert set(codes.BY_SCRIPT) <= set(SCRIPT_NAMES)
    everywhere = set().union(*(table_codes(n) for n in SCRIPT_NAMES))
    assert {int(r) for r in codes.Refusal} == {c for c in everywhere if c < 0}
    # A negative code means the same refusal in every script that returns it.
    for enums in codes.BY_SCRIPT.values():
        for enum in enums:
            for m in enum:
                if m < 0:
                    assert codes.Refusal(m).name == m.name, (enum, m)
    # ...and errors.py turns each into its exception.
    assert set(errors._BY_CODE) == set(codes.Refusal)


def test_every_code_is_documented() -> None:
    for enums in codes.BY_SCRIPT.values():
        for enum in enums:
            assert issubclass(enum, IntEnum) and enum.__doc__, enum


# A reply compared with a bare number (`code == -1`, `r == 1`) or a table keyed by them
# (`{1: "..."}`); a sign test (`code < 0`: any refusal) is fine.
LITERAL = re.compile(
    r"\b(?:code|codes|reply|created|r|wrapped)\b(?:\[\d\])?\)?\s*(?:==|!=)\s*-?\d\b"
    r"|\{\s*-?\d+\s*:\s*\""
)


def test_callers_compare_replies_with_the_table() -> None:
    for path in SRC_DIR.rglob("*.py"):
        if path.name == "codes.py":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            assert not LITERAL.search(code), f"{path.name}:{i}: {line.strip()}"
