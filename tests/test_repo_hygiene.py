"""The repository speaks only of itself: no machine paths, no paths outside the checkout and no
tracker references in any tracked file, and every link of the README and docs/ leads to a file
that exists (a reader of a fresh clone can follow all of them). No server needed."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: What a tracked file must not say, with why. A machine's own paths mean nothing on another
#: machine; a tracker reference means nothing to a reader of the code: say what is meant.
FORBIDDEN: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\.\./shared\b"), "a path outside the repository"),
    (re.compile(r"\bDESIGN\.md\b"), "a design file outside the repository (docs/design.md is it)"),
    (re.compile(r"(?<![\w.])/(?:work|home|Users|root)/"), "a machine path"),
    (re.compile(r"(?<![\w.:/])/tmp/"), "a machine path (tests take tmp_path)"),
    (re.compile(r"\b(?:issues?|tickets?)\s*#?\s*\d+", re.I), "a tracker number"),
    (re.compile(r"(?:^|(?<=[\s(\[]))#\d{1,5}(?=[\s).,:\]]|$)"), "a tracker reference (#N)"),
    (
        re.compile(r"\b(?:the|this|that|an?|our|its|their)\s+(?:[\w-]+\s+)?issue(?:'s|s)?\b", re.I),
        "a tracker issue: say what it asked for instead",
    ),
    (re.compile(r"\b(?:BRIEF|ISSUE)\.md\b"), "a working note outside the repository"),
]

#: (file, text on the line): the few places a pattern above is the subject, not a leak. Each
#: must still occur (a stale entry fails), so the list cannot grow silently.
ALLOWED: list[tuple[str, str, str]] = [
    # The chaos report scrubs the temporary paths of a run out of the reasons it prints.
    ("tests/chaos/report.py", 're.sub(r"/tmp/\\S+", "<tmp>"', "/tmp/"),
    # URL parsing and redaction, given unix-socket URLs as a user would write them.
    ("tests/test_http_security.py", '"unix:///tmp/v.sock?password=hunter2&db=0"', "/tmp/"),
    ("tests/test_unit.py", '"unix://:s3cret@/tmp/x/valkey.sock"', "/tmp/"),
    ("tests/test_unit.py", '"unix://:***@/tmp/x/valkey.sock"', "/tmp/"),
]

#: Files whose text is not prose or code a reader maintains (binary assets are skipped anyway).
SKIP_SUFFIXES = (".png", ".jpg", ".ico", ".svg")


def tracked_files() -> list[str]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=30
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: no tracked files to check")
    return sorted(p for p in out.decode().split("\0") if p and not p.endswith(SKIP_SUFFIXES))


def text_of(path: str) -> str | None:
    """The file's text, or None for a binary or a file listed but absent (a deletion not
    committed yet)."""
    try:
        data = (ROOT / path).read_bytes()
    except FileNotFoundError:
        return None
    if b"\0" in data:
        return None
    try:
        return data.decode()
    except UnicodeDecodeError:
        return None


def violations(path: str, text: str) -> list[str]:
    """`path:line: why: the line` for every forbidden string not on an allowed line."""
    allowed = [(needle, what) for p, needle, what in ALLOWED if p == path]
    found = []
    for n, line in enumerate(text.splitlines(), 1):
        for pattern, why in FORBIDDEN:
            for m in pattern.finditer(line):
                if any(needle in line and what in m.group(0) for needle, what in allowed):
                    continue
                found.append(f"{path}:{n}: {why}: {line.strip()}")
    return found


def test_no_machine_paths_or_tracker_references_in_tracked_files() -> None:
    found = []
    for path in tracked_files():
        if path == "tests/test_repo_hygiene.py":
            continue  # the patterns themselves
        text = text_of(path)
        if text is not None:
            found += violations(path, text)
    assert not found, "say what is meant instead:\n" + "\n".join(found)


def test_every_allowed_exception_is_still_there() -> None:
    for path, needle, _ in ALLOWED:
        assert needle in (ROOT / path).read_text(), f"stale ALLOWED entry for {path}: {needle}"


#: The examples below are built from pieces so that this file itself holds none of the strings
#: it refuses elsewhere (a reader scanning the repository for them finds only real ones).
UP = ".." + "/"


@pytest.mark.parametrize(
    "line",
    [
        "See `" + UP + "shared/" + "DESIGN.md` for the design.",
        "results in /" + "work/main/bench/results",
        "written to /tmp/jobq-run/out.json",
        "as asked in " + "issue" + " 12",
        "fixed in " + "#" + "14",
        "the HA issue asked for it",
        "this keeps the Cluster issue's promise",
        "~/ or /home/me/jobq",
    ],
)
def test_the_patterns_catch_what_they_are_for(line: str) -> None:
    assert violations("docs/any.md", line), line


@pytest.mark.parametrize(
    "line",
    [
        "tokens are never reissued (a hybrid logical clock)",
        "color: #333;",
        "def test(tmp_path): path = tmp_path / 'x'",
        "unix:///run/jobq/valkey.sock",
        "the resource tracker of multiprocessing",
        "docs/deploy.md#reads-from-replicas",
    ],
)
def test_the_patterns_leave_ordinary_text_alone(line: str) -> None:
    assert not violations("docs/any.md", line), line


# -- links ------------------------------------------------------------------------------------

FENCE = re.compile(r"^```.*?^```$", re.S | re.M)
LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
#: A path in backticks that names a file of the repository (with a directory and an extension).
CODE_PATH = re.compile(r"`((?:\.\./|\./)?[\w@.-]+(?:/[\w@.-]+)+\.(?:md|py|lua|toml|yml|sh|js))`")


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def slugs(md: Path) -> set[str]:
    """GitHub's anchors for the headings of `md` (lower case, punctuation dropped, spaces -)."""
    heads = re.findall(r"^#{1,6}\s+(.+?)\s*$", FENCE.sub("", md.read_text()), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}


def broken_links(md: Path, text: str | None = None) -> list[str]:
    """What is wrong with the links of `md` (its text, or `text` as if it were in `md`)."""
    text = FENCE.sub("", md.read_text() if text is None else text)
    bad = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = unquote(target).partition("#")
        dest = (md.parent / path).resolve() if path else md
        where = f"{md.relative_to(ROOT)}: ({target})"
        if not dest.exists():
            bad.append(f"{where}: no such file")
        elif not dest.is_relative_to(ROOT):
            bad.append(f"{where}: outside the repository")
        elif anchor and dest.suffix == ".md" and anchor not in slugs(dest):
            bad.append(f"{where}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    for name in CODE_PATH.findall(text):
        bases = (md.parent, ROOT, ROOT / "src" / "jobq")
        if not any((base / name).resolve().is_relative_to(ROOT) and (base / name).exists()
                   for base in bases):  # fmt: skip
            bad.append(f"{md.relative_to(ROOT)}: `{name}`: no such file in the repository")
    return bad


@pytest.mark.parametrize("md", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_a_file_of_the_repository(md: Path) -> None:
    bad = broken_links(md)
    assert not bad, "\n".join(bad)


def test_the_link_check_can_fail() -> None:
    """A link out of the repository, a missing heading and a backticked path that does not
    exist are each reported, as if written in docs/design.md."""
    text = (
        "[a](" + UP + UP + "shared/DESIGN.md) [b](cluster.md#no-such-heading) `src/jobq/nope.py`\n"
    )
    bad = broken_links(ROOT / "docs" / "design.md", text)
    assert len(bad) == 3, bad
