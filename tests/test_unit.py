"""Unit tests: no server. States, serde, config, back-off, keys, script headers vs wrappers,
errors and the tolerant record decoders."""

from __future__ import annotations

import datetime as dt
import pickle
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import luasrc
import orjson
import pytest
import redis
from redis.crc import key_slot

from jobq import App, JobState, Retry
from jobq import errors as E
from jobq.config import Settings
from jobq.keys import LUA_SUFFIXES, Keys
from jobq.model import Claimed, JobRecord, JobSpec, RemoteParent
from jobq.scripts import SCRIPT_NAMES, SHARED, Batch, Scripts
from jobq.serde import Serializer
from jobq.states import ACTIVE, TERMINAL, TRANSITIONS, allowed
from jobq.worker.runner import MAX_BACKOFF_MS, backoff_delay_ms

pytestmark = pytest.mark.timeout(30)

LUA_DIR = Path(str(resources.files("jobq") / "lua"))
SRC_DIR = LUA_DIR.parent
# A URL nothing listens on: unit tests must never connect, and this proves it.
NOWHERE = "redis://127.0.0.1:1/0"


# -- states ------------------------------------------------------------------------------------


def test_states_partition_into_active_and_terminal() -> None:
    assert set(JobState) == TERMINAL | ACTIVE
    assert not TERMINAL & ACTIVE
    assert {s.value for s in JobState} == {
        "scheduled",
        "queued",
        "running",
        "succeeded",
        "failed",
        "cancelled",
    }


def test_allowed_transitions() -> None:
    assert allowed(None, JobState.QUEUED)
    assert allowed(None, JobState.SCHEDULED)
    assert allowed(JobState.QUEUED, JobState.RUNNING)
    assert allowed(JobState.RUNNING, JobState.SUCCEEDED)
    assert allowed(JobState.FAILED, JobState.QUEUED)  # dead-letter re-run
    assert not allowed(JobState.SUCCEEDED, JobState.QUEUED)
    assert not allowed(JobState.SCHEDULED, JobState.RUNNING)  # must be promoted first
    assert not allowed(None, JobState.RUNNING)
    # Only the dead-letter re-run leaves a terminal state.
    leaving_terminal = {(s, d) for (s, d) in TRANSITIONS if s in TERMINAL}
    assert leaving_terminal == {(JobState.FAILED, JobState.QUEUED)}


def _written_states(script: str) -> set[str]:
    """States a script writes (``'state', 'x'``), itself or through the preamble's helpers
    (dead_letter, cancel_job, release_to_queue...)."""
    return luasrc.written_states(script)


def test_states_table_matches_the_scripts() -> None:
    """Every transition in the table is made by the script it names, and every state a script
    writes is a state with a transition into it."""
    for (src, dst), scripts in TRANSITIONS.items():
        for script in scripts:
            assert script in SCRIPT_NAMES, (src, dst, script)
            body = (LUA_DIR / f"{script}.lua").read_text()
            if src is None:  # enqueue picks queued/scheduled at run time
                assert f"'{dst.value}'" in body, (src, dst, script)
            else:
                assert dst.value in _written_states(script), f"{script}.lua never writes {dst}"
    targets = {dst.value for (_src, dst) in TRANSITIONS}
    for script in SCRIPT_NAMES:
        assert _written_states(script) <= targets, script


# -- serde -------------------------------------------------------------------------------------


def test_json_is_the_default_codec() -> None:
    s = Serializer()
    blob = s.encode_args((1, "a"), {"k": [1.5, None]})
    assert blob.startswith(b"[")
    assert s.decode_args(blob) == ([1, "a"], {"k": [1.5, None]})
    assert s.decode_result(s.encode_result({"x": 1})) == {"x": 1}
    assert App(NOWHERE).serializer.codec == "json"


def test_msgpack_round_trip_and_any_worker_decodes_it() -> None:
    mp = Serializer("msgpack")
    blob = mp.encode_args((1, b"\x00bytes"), {"k": "v"})
    assert blob[0] & 0xF0 == 0x90  # a fixarray: the first byte tells the codec
    assert mp.decode_args(blob) == ([1, b"\x00bytes"], {"k": "v"})
    # A JSON worker decodes a msgpack producer's payload.
    assert Serializer("json").decode_args(blob) == ([1, b"\x00bytes"], {"k": "v"})
    assert mp.decode_result(mp.encode_result([1, 2])) == [1, 2]


def test_pickle_is_refused_unless_opted_in() -> None:
    blob = Serializer("pickle").encode_args((dt.date(2024, 1, 2),), {})
    assert blob[0] == 0x80
    with pytest.raises(E.DecodeError) as exc:
        Serializer("json").decode_args(blob)
    msg = str(exc.value)
    assert "pickle" in msg and "JOBQ_ALLOW_PICKLE" in msg
    assert Serializer("json", allow_pickle=True).decode_args(blob) == ([dt.date(2024, 1, 2)], {})
    # The opt-in reaches the App through the environment.
    app = App(NOWHERE, settings=Settings.from_env(env={"JOBQ_ALLOW_PICKLE": "1"}))
    assert app.serializer.decode_args(blob)[0] == [dt.date(2024, 1, 2)]
    assert not App(NOWHERE, settings=Settings.from_env(env={})).serializer.allow_pickle


@pytest.mark.parametrize("codec", ["json", "msgpack"])
def test_unserialisable_argument_is_named(codec: str) -> None:
    s = Serializer(codec)
    with pytest.raises(E.SerializationError, match=r"argument 1 \(object\)"):
        s.encode_args((1, object()), {})
    with pytest.raises(E.SerializationError, match=r"argument 'tags' \(set\)"):
        s.encode_args((1,), {"ok": 2, "tags": {1, 2}})


def test_unserialisable_argument_raises_at_submit_before_any_connection() -> None:
    app = App(NOWHERE)

    @app.task
    def store_it(x: Any, *, when: Any = None) -> None: ...

    with pytest.raises(E.SerializationError, match="argument 0"):
        store_it.submit(object())
    with pytest.raises(E.SerializationError, match="argument 'when'"):
        store_it.submit(1, when={1})
    assert app._store is None  # never connected


def test_unencodable_result_names_its_type() -> None:
    class Widget:
        pass

    with pytest.raises(E.SerializationError, match="Widget"):
        Serializer().encode_result(Widget())


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"", "empty payload"),
        (b"\x00garbage", "unrecognised payload format"),
        (b"[1, 2", "cannot decode payload"),
        (b'{"a": 1}', "not an [args, kwargs] pair"),
        (b"[1, 2]", "not an [args, kwargs] pair"),
    ],
)
def test_malformed_payloads_raise_decode_error(blob: bytes, message: str) -> None:
    with pytest.raises(E.DecodeError, match=re.escape(message)):
        Serializer().decode_args(blob)


def test_unknown_codec_is_a_config_error() -> None:
    with pytest.raises(E.ConfigError, match="unknown codec 'yaml'"):
        Serializer("yaml")
    with pytest.raises(E.ConfigError, match="unknown codec"):
        App(NOWHERE, codec="yaml")


def test_pickle_codec_still_decodes_json() -> None:
    assert Serializer("pickle").decode_args(b"[[1], {}]") == ([1], {})
    assert pickle.loads(Serializer("pickle").encode_result(3)) == [3]


# -- config ------------------------------------------------------------------------------------


def test_settings_defaults() -> None:
    s = Settings()
    assert s.url is None and s.prefix == "jobq" and s.codec == "json"
    assert not s.allow_pickle
    assert s.heartbeat_ms < s.lease_ms


def test_settings_from_env_converts_types_and_skips_empty() -> None:
    env = {
        "JOBQ_URL": "redis://h:1/2",
        "JOBQ_PREFIX": "p1",
        "JOBQ_LEASE_MS": "9000",
        "JOBQ_HEARTBEAT_MS": "3000",
        "JOBQ_ALLOW_PICKLE": "yes",
        "JOBQ_CODEC": "",  # empty = unset
        "OTHER": "ignored",
    }
    s = Settings.from_env(env=env)
    assert (s.url, s.prefix, s.lease_ms, s.heartbeat_ms) == ("redis://h:1/2", "p1", 9000, 3000)
    assert s.allow_pickle is True and s.codec == "json"


def test_settings_precedence_env_below_explicit_arguments() -> None:
    env = {"JOBQ_PREFIX": "from-env", "JOBQ_URL": "redis://env:1/0", "JOBQ_TICK_MS": "50"}
    s = Settings.from_env(env=env, prefix="from-flag", url=None)
    assert s.prefix == "from-flag"  # explicit wins
    assert s.url == "redis://env:1/0"  # None means "not given": the env value stays
    assert s.tick_ms == 50


def test_app_reads_env_and_arguments_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBQ_URL", "redis://from-env:1/0")
    monkeypatch.setenv("JOBQ_PREFIX", "envprefix")
    app = App()
    assert app.settings.url == "redis://from-env:1/0"
    assert app.keys.prefix == "envprefix"
    app2 = App("redis://explicit:2/0", prefix="mine", lease_ms=60_000)
    assert app2.settings.url == "redis://explicit:2/0"
    assert app2.keys.prefix == "mine"
    assert app2.settings.lease_ms == 60_000
    app2.configure(prefix="later")  # CLI flags applied after import
    assert app2.keys.prefix == "later"
    assert app2.settings.url == "redis://explicit:2/0"


def test_bad_settings_are_config_errors_that_say_why() -> None:
    with pytest.raises(E.ConfigError, match="JOBQ_LEASE_MS='soon'"):
        Settings.from_env(env={"JOBQ_LEASE_MS": "soon"})
    with pytest.raises(E.ConfigError, match="heartbeat_ms"):
        Settings.from_env(env={}, lease_ms=1000, heartbeat_ms=1000)
    with pytest.raises(E.ConfigError, match="unknown setting"):
        Settings().with_overrides(leese_ms=5)
    with pytest.raises(E.ConfigError, match="positive"):
        Settings().with_overrides(tick_ms=0)


def test_submit_options_are_validated_before_connecting() -> None:
    app = App(NOWHERE)

    @app.task
    def noop() -> None: ...

    with pytest.raises(E.ConfigError, match="priority"):
        noop.submit(priority=10**6)
    with pytest.raises(E.ConfigError, match="retries"):
        noop.submit(retries=-1)
    with pytest.raises(E.ConfigError, match="either delay or eta"):
        noop.submit(delay=1, eta=dt.datetime.now(dt.UTC))
    with pytest.raises(E.ConfigError, match="unknown submit option"):
        app.submit("noop", (), {}, qeue="x")
    with pytest.raises(E.ConfigError, match="job_id"):
        noop.map([1, 2], job_id="same")
    assert app._store is None


def test_task_registration() -> None:
    app = App(NOWHERE)

    @app.task
    def plain() -> int:
        return 1

    @app.task(name="custom.name", queue="high", retries=3, timeout=5)
    def renamed() -> int:
        return 2

    assert set(app.tasks) == {"plain", "custom.name"}
    assert app.tasks["custom.name"].options.retries == 3
    assert plain() == 1 and renamed() == 2  # still callable directly

    def other() -> None: ...

    with pytest.raises(E.ConfigError, match="two tasks"):
        app.task(name="plain")(other)


# -- back-off ----------------------------------------------------------------------------------


def test_backoff_is_exponential_with_bounded_jitter() -> None:
    rng = random.Random(7)
    base = 100
    for attempt in range(1, 40):
        nominal = min(base * 2 ** (attempt - 1), MAX_BACKOFF_MS)
        for _ in range(20):
            d = backoff_delay_ms(base, attempt, rng)
            assert 0.5 * nominal - 1 <= d <= 1.5 * nominal, (attempt, d)
    # The cap holds for absurd attempt numbers; attempt 0 counts as the first.
    assert backoff_delay_ms(base, 10_000, rng) <= 1.5 * MAX_BACKOFF_MS
    assert 50 <= backoff_delay_ms(base, 0, rng) <= 150
    assert backoff_delay_ms(0, 5, rng) == 0
    # Jitter: several workers retrying together do not all pick the same delay.
    assert len({backoff_delay_ms(1000, 3, rng) for _ in range(20)}) > 10


# -- keys --------------------------------------------------------------------------------------


def _all_keys(k: Keys) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in dir(Keys):
        if name.startswith("_") or name in ("prefix", "tag", "base", "partition", "control"):
            continue  # (partition/control give the Keys of another partition, not a key)
        attr = getattr(Keys, name)
        if isinstance(attr, property):
            out[name] = getattr(k, name)
        elif callable(attr):
            out[name] = getattr(k, name)("x")
    return out


def test_every_key_lives_under_the_prefix_hash_tag() -> None:
    k = Keys("deploy-1")
    keys = _all_keys(k)
    assert len(keys) >= 15
    for name, key in keys.items():
        assert key.startswith("{deploy-1}:"), (name, key)
    # One Cluster slot for the whole deployment, so every script is Cluster-safe.
    assert len({key_slot(key.encode()) for key in keys.values()}) == 1
    # Distinct names for distinct things.
    assert len(set(keys.values())) == len(keys)


def test_key_strings_exist_only_in_keys_py() -> None:
    literal = re.compile(r"""['"{]jobq\}?:\S""")
    for path in SRC_DIR.rglob("*.py"):
        if path.name == "keys.py":
            continue
        assert not literal.search(path.read_text()), f"key string in {path}"
    for path in LUA_DIR.glob("*.lua"):
        text = path.read_text()
        assert "jobq" not in text, path
        # Key suffixes come from keys.LUA_SUFFIXES, never string literals.
        assert set(re.findall(r"\bK_([A-Z]+)\b", text)) <= set(LUA_SUFFIXES), path
        assert "P .. '" not in text, f"{path}: a key built from a string literal"


# -- script headers vs wrappers ----------------------------------------------------------------


@dataclass
class Header:
    keys: list[int]
    keys_per_item: bool
    argv_text: str
    argv_fixed: list[int]
    variadic: bool
    per_item: int
    returns: str
    codes: set[int]


def parse_header(name: str) -> Header:
    text = (LUA_DIR / f"{name}.lua").read_text()
    lines = []
    for line in text.splitlines():
        if not line.startswith("--"):
            break
        lines.append(line[2:].strip())
    head = "\n".join(lines)
    m_keys = re.search(r"^KEYS:(.*)$", head, re.M)
    m_argv = re.search(r"^ARGV:(.*?)(?=^Returns:)", head, re.M | re.S)
    m_ret = re.search(r"^Returns:(.*)\Z", head, re.M | re.S)
    assert m_keys and m_argv and m_ret, f"{name}.lua: header needs KEYS, ARGV and Returns lines"
    argv = " ".join(m_argv.group(1).split())
    fixed = [int(n) for n in re.findall(r"(?:^|, )(\d+)(?!\.\.)\s", argv)]
    variadic = bool(re.search(r"\d+\.\.|\bthen\b", argv))
    per_item = 0
    if variadic:
        if m := re.search(r"(\d+) fields", argv):
            per_item = int(m.group(1))
        elif "pairs" in argv:
            per_item = 2
        elif m := re.search(r"per job: (.*)$", argv):
            per_item = len(re.sub(r"\(.*?\)", "", m.group(1)).split(","))
        else:
            per_item = 1
    return Header(
        keys=[int(n) for n in re.findall(r"(?:^\s*|, )(\d+) ", m_keys.group(1))],
        keys_per_item=bool(re.search(r"then per (?:job|item|pair)", m_keys.group(1))),
        argv_text=argv,
        argv_fixed=fixed,
        variadic=variadic,
        per_item=per_item,
        returns=" ".join(m_ret.group(1).split()),
        codes={int(c) for c in re.findall(r"(-\d+) =", m_ret.group(1))},
    )


def _body(name: str) -> str:
    return "\n".join(
        line for line in (LUA_DIR / f"{name}.lua").read_text().splitlines() if line[:2] != "--"
    )


ROW = JobSpec("j", "t", "q", b"[[],{}]").as_row()
# name -> (call with one item, call with two items); the single-call scripts repeat themselves.
CALLS: dict[str, tuple[Callable[[Scripts, Any], Any], Callable[[Scripts, Any], Any]]] = {
    "enqueue": (lambda s, c: s.enqueue(c, [ROW]), lambda s, c: s.enqueue(c, [ROW, ROW])),
    "claim": (
        lambda s, c: s.claim(c, "w", ["a"], 3, 1000),
        lambda s, c: s.claim(c, "w", ["a", "b"], 3, 1000),
    ),
    "complete": (
        lambda s, c: s.complete(c, [("j", "1", b"[1]", -1)], 60),
        lambda s, c: s.complete(c, [("j", "1", b"[1]", -1)] * 2, 60),
    ),
    "fail": (
        lambda s, c: s.fail(c, [("j", "1", b"{}", 5, -1)]),
        lambda s, c: s.fail(c, [("j", "1", b"{}", 5, -1)] * 2),
    ),
    "heartbeat": (
        lambda s, c: s.heartbeat(c, [("j", "1")], 1000),
        lambda s, c: s.heartbeat(c, [("j", "1")] * 2, 1000),
    ),
    "requeue": (
        lambda s, c: s.requeue(c, [("j", "1")]),
        lambda s, c: s.requeue(c, [("j", "1")] * 2),
    ),
    "reap": (lambda s, c: s.reap(c, 10),) * 2,
    "promote": (lambda s, c: s.promote(c, 10),) * 2,
    "cancel": (lambda s, c: s.cancel(c, "j", 60),) * 2,
    "rerun": (lambda s, c: s.rerun(c, "j"),) * 2,
    "await": (lambda s, c: s.await_(c, "j"),) * 2,
    "leader": (lambda s, c: s.leader(c, "me", 1000),) * 2,
    "progress": (lambda s, c: s.progress(c, "j", "1", 0.5, "half"),) * 2,
    "orphans": (lambda s, c: s.orphans(c, 1000, 10),) * 2,
    "purge": (lambda s, c: s.purge(c, "q", 10, 60),) * 2,
    "trim_dead": (lambda s, c: s.trim_dead(c, 1000, 10),) * 2,
    "delete": (lambda s, c: s.delete(c, "j"),) * 2,
    "epoch": (lambda s, c: s.epoch(c, 1000),) * 2,
    "link": (
        lambda s, c: s.link(c, [("j", 1, "k", True)]),
        lambda s, c: s.link(c, [("j", 1, "k", True)] * 2),
    ),
    "deliver": (
        lambda s, c: s.deliver(c, [("k", "j", "succeeded", b"[1]")], 60),
        lambda s, c: s.deliver(c, [("k", "j", "succeeded", b"[1]")] * 2, 60),
    ),
    "declare": (
        lambda s, c: s.declare(c, [("t", "{}")]),
        lambda s, c: s.declare(c, [("t", "{}")] * 2),
    ),
    "handback": (
        lambda s, c: s.handback(c, [("j", "1", 0)], 500, 1000),
        lambda s, c: s.handback(c, [("j", "1", 0)] * 2, 500, 1000),
    ),
}


def test_every_script_has_a_wrapper_call_here() -> None:
    assert set(CALLS) == set(SCRIPT_NAMES)
    assert set(SCRIPT_NAMES) == {p.stem for p in LUA_DIR.glob("*.lua")} - set(SHARED)


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_script_header_matches_its_body_and_wrapper(name: str) -> None:
    h = parse_header(name)
    body = _body(name)
    # KEYS: numbered 1..n, the first is always the events stream, and the body uses exactly them.
    assert h.keys == list(range(1, len(h.keys) + 1)), h.keys
    used_keys = {int(n) for n in re.findall(r"KEYS\[(\d+)\]", body)}
    assert used_keys <= set(h.keys), f"{name}.lua uses undocumented KEYS {used_keys}"
    assert used_keys | {1} == set(h.keys), f"{name}.lua documents unused KEYS"
    # ARGV: 1-3 belong to the preamble; the script's own start at 4, numbered in order.
    first = re.match(r"\s*(\d+)", h.argv_text)
    assert first and first.group(1) == "4", h.argv_text
    assert h.argv_fixed == list(range(4, 4 + len(h.argv_fixed))), h.argv_text
    literal_argv = {int(n) for n in re.findall(r"ARGV\[(\d+)\]", body)}
    assert max(literal_argv, default=3) <= 3 + len(h.argv_fixed), (name, literal_argv)
    # Negative return codes are ones errors.py maps to exceptions.
    assert h.codes <= set(E._BY_CODE), (name, h.codes)

    # The wrapper passes the documented KEYS (all under the hash tag) and ARGV shape.
    keys = Keys("unit")
    scripts = Scripts(redis.Redis.from_url(NOWHERE), keys, 1234)  # registering is offline
    batch = Batch()  # collects calls without sending them
    one, two = CALLS[name]
    one(scripts, batch)
    two(scripts, batch)
    (n1, k1, a1), (n2, _k2, a2) = batch.calls
    assert n1 == n2 == name
    n_fixed = 3 + len(h.argv_fixed)
    # Scripts given job ids also get each id's job hash in KEYS, after the numbered ones.
    items = (len(a1) - n_fixed) // h.per_item if h.keys_per_item else 0
    assert len(k1) == len(h.keys) + items, f"{name}: wrapper passes {len(k1)} KEYS"
    assert k1[0] == keys.events
    assert all(k.startswith(keys.base) for k in k1)
    assert a1[:3] == [keys.base, 0, "1234"]  # preamble head: key base, now, events cap
    n_fixed = 3 + len(h.argv_fixed)
    if not h.variadic:
        assert len(a1) == n_fixed, f"{name}: wrapper passes {len(a1)} ARGV, header says {n_fixed}"
    else:
        assert len(a1) == n_fixed + h.per_item, (name, a1)
        assert len(a2) - len(a1) == h.per_item, f"{name}: per-item stride differs from header"
        stride = re.search(r"i \* (\d+)|#ARGV, (\d+)", body)
        if stride:
            assert int(stride.group(1) or stride.group(2)) == h.per_item, name


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_script_header_lists_the_keys_it_builds_in_its_slot(name: str) -> None:
    """`Builds:` names every key family the script builds from the key base (itself or through
    a preamble helper it calls), and only those: with KEYS, what the script can touch."""
    assert luasrc.header_builds(name) == luasrc.built_suffixes(name), name


def test_script_source_has_the_key_suffixes_and_preamble() -> None:
    from jobq.scripts import source

    src = source("claim")
    for name, suffix in LUA_SUFFIXES.items():
        assert f"local K_{name} = '{suffix}'" in src
    assert "local function emit" in src


# -- errors ------------------------------------------------------------------------------------


def test_error_table_and_hierarchy() -> None:
    assert isinstance(E.from_code(E.STALE_TOKEN, "j1", "complete"), E.StaleToken)
    assert isinstance(E.from_code(E.NOT_FOUND, "j1", "x"), E.JobNotFound)
    assert isinstance(E.from_code(E.WRONG_STATE, "j1", "x"), E.InvalidTransition)
    unknown = E.from_code(-99, "j1", "rerun")
    assert type(unknown) is E.JobqError and "j1" in str(unknown)
    assert "rerun refused for job j1" in str(E.from_code(E.WRONG_STATE, "j1", "rerun"))
    for cls in vars(E).values():
        if isinstance(cls, type) and issubclass(cls, E.JobqError):
            assert cls.__doc__ and cls.__doc__.strip(), cls
    # Control flow is not a failure.
    assert not issubclass(Retry, E.JobqError)
    assert issubclass(E.ResultTimeout, TimeoutError)
    failed = E.JobFailed("j1", "ValueError", "boom", "tb")
    assert str(failed) == "job j1 failed: ValueError: boom"
    assert failed.remote_traceback == "tb"


# -- model -------------------------------------------------------------------------------------


def test_job_record_decoding_is_tolerant() -> None:
    minimal = JobRecord.from_hash("j1", {b"state": b"queued"})
    assert minimal.state is JobState.QUEUED
    assert (minimal.queue, minimal.attempt, minimal.max_attempts) == ("default", 0, 1)
    assert minimal.token is None and minimal.error is None and minimal.result is None
    full = JobRecord.from_hash(
        "j2",
        {
            b"task": b"add",
            b"queue": b"high",
            b"state": b"failed",
            b"pri": b"5",
            b"att": b"2",
            b"max": b"3",
            b"timeout": b"",
            b"token": b"17",
            b"error": b'{"type": "ValueError", "message": "m", "traceback": ""}',
            b"cancel": b"123",
            b"some_future_field": b"whatever",  # ignored, no migration needed
        },
    )
    assert (full.task, full.queue, full.priority, full.attempt, full.max_attempts) == (
        "add",
        "high",
        5,
        2,
        3,
    )
    assert full.timeout_ms is None and full.token == 17
    assert full.error == {"type": "ValueError", "message": "m", "traceback": ""}
    assert full.cancel_requested


def test_claimed_decodes_bytes_and_text_rows() -> None:
    row = [b"j1", 7, 2, b"add", b"[[1],{}]", b"3", b"", b"q", b"250"]
    c = Claimed.from_reply(row)
    assert (c.id, c.token, c.attempt, c.task, c.queue) == ("j1", "7", 2, "add", "q")
    assert c.payload == b"[[1],{}]" and c.max_attempts == 3
    assert c.timeout_ms is None and c.backoff_ms == 250
    c2 = Claimed.from_reply(["j1", "7", "1", "add", "[[],{}]", "", "5000", "q", ""])
    assert c2.payload == b"[[],{}]" and c2.max_attempts == 1 and c2.timeout_ms == 5000
    assert c2.backoff_ms is None


def test_job_spec_row_sends_only_the_options_that_differ() -> None:
    row = JobSpec("j", "t", "q", b"p").as_row()
    assert row == ["j", "t", "q", b"p", "", b""]  # options at their defaults: nothing to decode
    assert len(row) == parse_header("enqueue").per_item
    full = JobSpec(
        "j",
        "t",
        "q",
        b"\x00\xff",
        priority=-2,
        max_attempts=3,
        timeout_ms=0,
        backoff_ms=250,
        result_ttl_s=60,
        delay_ms=5,
        parents=("a", "b"),
        pass_results="list",
        unique_key="u",
        concurrency_key="c",
        concurrency_limit=4,
        fallback_queue="fb",
    ).as_row()
    assert full[:4] == ["j", "t", "q", b"\x00\xff"]  # the payload stays bytes, outside JSON
    assert orjson.loads(full[4]) == {
        "pri": -2,
        "max": 3,
        "timeout": 0,
        "backoff": 250,
        "ttl": 60,
        "delay": 5,
        "parents": "a,b",
        "pass": "list",
        "ukey": "u",
        "ckey": "c",
        "climit": 4,
        "fallback": "fb",
    }
    # A default concurrency limit goes unsaid, and so does `pass` without parents.
    some = JobSpec("j", "t", "q", b"p", concurrency_key="c", pass_results="one").as_row()
    assert orjson.loads(some[4]) == {"ckey": "c"}
    # Remote parents (handoff.py) travel outside the JSON, length-prefixed: any byte passes.
    remote = JobSpec(
        "j",
        "t",
        "q",
        b"p",
        parents=("a:1",),
        remote_parents=(RemoteParent("a:1", "succeeded", b"|\x00"),),
    ).as_row()
    assert remote[5] == b"succeeded:3:2:a:1|\x00"


# -- URLs in messages and app paths ------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@10.0.0.5:6380/0", "redis://:***@10.0.0.5:6380/0"),
        ("rediss://user:s3cret@host/2", "rediss://user:***@host/2"),
        ("unix://:s3cret@/tmp/x/valkey.sock", "unix://:***@/tmp/x/valkey.sock"),
        ("redis://127.0.0.1:6390/0", "redis://127.0.0.1:6390/0"),
    ],
)
def test_redact_hides_passwords(url: str, shown: str) -> None:
    from jobq.store import redact

    assert redact(url) == shown


def test_load_app_errors_say_what_is_wrong() -> None:
    from jobq.worker.pools import load_app

    with pytest.raises(E.ConfigError, match=re.escape("should look like 'package.module:app'")):
        load_app("nocolon")
    with pytest.raises(E.ConfigError, match="cannot import 'no_such_mod_q'"):
        load_app("no_such_mod_q:app")
    with pytest.raises(E.ConfigError, match="is not a jobq App"):
        load_app("jobq.client:Job")
    assert isinstance(load_app("jobq.demo:app"), App)
