"""Reading the Lua sources for tests: a script's body, the preamble's helpers, and what a script
does through them (the helpers it reaches, the states and key suffixes they write), so checks
against the scripts see what a helper does on a script's behalf, not only its literal text."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from jobq import scripts
from jobq.keys import LUA_SUFFIXES

LUA_DIR = Path(scripts.__file__).parent / "lua"

_DEF = re.compile(r"^(?:local function (\w+)\(|(\w+) = function\()")


def _strip(line: str) -> str:
    """One line without its comment (a `--` outside a quoted string starts it)."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote and line[i - 1] != "\\":
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif line.startswith("--", i):
            return line[:i]
    return line


def _code(text: str) -> str:
    """`text` without its comments."""
    return "\n".join(_strip(line) for line in text.splitlines())


@cache
def helpers() -> dict[str, str]:
    """The shared helpers' top-level functions (`scripts.SHARED`): name -> code of its body
    (comments stripped).
    A function starts at `local function f(` or `f = function(` in column 0 and ends at the
    next `end` in column 0."""
    out: dict[str, str] = {}
    name, lines = "", []
    text = "\n".join((LUA_DIR / f"{part}.lua").read_text() for part in scripts.SHARED)
    for line in text.splitlines():
        m = _DEF.match(line)
        if m and not name:
            name, lines = m.group(1) or m.group(2), [line]
        elif name:
            lines.append(line)
            if line.rstrip() == "end":
                out[name] = _code("\n".join(lines))
                name = ""
    return out


def body(name: str) -> str:
    """A script's code, comments stripped."""
    return _code((LUA_DIR / f"{name}.lua").read_text())


def reached(code: str) -> set[str]:
    """Every preamble helper `code` calls, directly or through other helpers."""
    table = helpers()
    seen: set[str] = set()
    todo = [code]
    while todo:
        text = todo.pop()
        for h in table:
            if h not in seen and re.search(rf"(?<![\w.]){h}\(", text):
                seen.add(h)
                todo.append(table[h])
    return seen


def with_helpers(name: str) -> str:
    """A script's code followed by the code of every helper it reaches."""
    code = body(name)
    return "\n".join([code, *(helpers()[h] for h in sorted(reached(code)))])


def written_states(name: str) -> set[str]:
    """States a script writes (``'state', 'x'`` in an HSET), itself or through its helpers."""
    return set(re.findall(r"'HSET', \w+, 'state', '(\w+)'", with_helpers(name)))


def built_suffixes(name: str) -> set[str]:
    """The key suffixes (K_*) a script builds keys from, itself or through its helpers."""
    return set(re.findall(r"\bK_([A-Z]+)\b", with_helpers(name)))


def header_paragraph(name: str, label: str) -> str:
    """The `label:` line of a script's header with its indented continuation lines, joined."""
    out: list[str] = []
    for line in (LUA_DIR / f"{name}.lua").read_text().splitlines():
        if not line.startswith("--"):
            break
        text = line[2:]
        if text.strip().startswith(label + ":"):
            out.append(text.strip()[len(label) + 1 :])
        elif out and text.startswith("   "):
            out.append(text.strip())
        elif out:
            break
    assert out, f"{name}.lua has no {label}: line"
    return " ".join(out)


def header_builds(name: str) -> set[str]:
    """The key suffixes (K_* names) a script's `Builds:` header line lists: `job:<id>, dead`."""
    text = header_paragraph(name, "Builds").strip()
    if text.startswith("nothing"):
        return set()
    by_suffix = {v: k for k, v in LUA_SUFFIXES.items()}
    items = [re.sub(r"<.*?>", "", item).strip() for item in text.split(",")]
    unknown = [i for i in items if i not in by_suffix]
    assert not unknown, f"{name}.lua: Builds: names no key suffix {unknown}"
    return {by_suffix[i] for i in items}
