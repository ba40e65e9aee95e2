"""Server time of one script call, per script, at 1 and at 100 jobs per call.

Measures what the Lua functions cost the server, apart from the network and the client: it
starts a private Valkey, loads the function library (`jobq.scripts.library()`) under a name of
its own, pipelines many FCALLs of one script and reads ``usec_per_call`` from INFO
commandstats (the server's own figure, which a noisy machine barely moves), beside the same
figure for the commands the script ran (their sum per call): the rest is Lua interpretation.
A state is set up first, untimed (jobs queued to claim, claimed to complete...), and each
measured phase leaves the next one's state: enqueue, claim, heartbeat, complete, await.

    python bench/lua_cost.py [calls per measurement, default 20000]

Prints a Markdown table: script, jobs per call, µs per call, µs of its commands per call (the
fastest of a few rounds: noise on a shared machine only adds).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).parent))
from valkey_server import start_valkey

from jobq import scripts
from jobq.keys import Keys

LIB = "luacost"
#: Rounds of every measurement: the fastest is reported (noise on a shared machine only adds).
ROUNDS = 3
K = Keys("bench")


def load(r: redis.Redis) -> None:
    """The library under our own name, so it can sit beside any other jobq's."""
    lib, src = scripts.library()
    r.function_load(src.replace(lib, LIB), replace=True)


def timed(r: redis.Redis, calls: list[tuple[str, list[str], list[Any]]]) -> tuple[float, float]:
    """µs per FCALL of the script, and µs of the commands it ran per FCALL."""
    r.config_resetstat()
    for i in range(0, len(calls), 2000):
        p = r.pipeline(transaction=False)
        for name, keys, args in calls[i : i + 2000]:
            p.fcall(f"{LIB}_{name}", len(keys), *keys, *args)
        p.execute()
    stats = r.info("commandstats")
    fc = stats.pop("cmdstat_fcall")
    inner = sum(v["usec"] for k, v in stats.items() if k != "cmdstat_config")
    return fc["usec_per_call"], inner / fc["calls"]


def text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def head(now: int = 0) -> list[Any]:
    return [K.base, now, 100000]


def run(r: redis.Redis, per: int, ncalls: int, tag: str) -> list[tuple[str, int, float, float]]:
    """One round of every script, `per` jobs per call, `ncalls` calls each."""
    rows: list[tuple[str, int, float, float]] = []
    ids = [[f"{tag}-{c}-{j}" for j in range(per)] for c in range(ncalls)]
    events = K.base + "events"
    enq = []
    for group in ids:
        flat: list[Any] = []
        for i in group:
            flat += [i, "noop", "default", "[[],{}]", "", ""]
        enq.append(("enqueue", [events, K.scheduled, K.seq, K.queues], [*head(), per, *flat]))
    rows.append(("enqueue", per, *timed(r, enq)))
    claim_keys = [events, K.leases, K.token, K.scheduled, K.ratelimits]
    claim_args = [*head(), "w1", 60000, per, per, "default"]
    claims = [("claim", claim_keys, claim_args)] * ncalls
    # (the replies are needed for the tokens: time these calls, then read the tokens back)
    rows.append(("claim", per, *timed(r, claims)))
    tokens = {i: text(r.hget(K.job(i), "token")) for group in ids for i in group}
    hb = []
    for group in ids:
        flat = []
        for i in group:
            flat += [i, tokens[i]]
        hb.append(
            (
                "heartbeat",
                [events, K.leases, K.workers, *map(K.job, group)],
                [*head(), 60000, "w1", 0, *flat],
            )
        )
    rows.append(("heartbeat", per, *timed(r, hb)))
    if per == 1:  # (await registers one caller on one job: measured on running jobs)
        aw = [("await", [events], [*head(), group[0], "", ""]) for group in ids]
        rows.append(("await", 1, *timed(r, aw)))
    comp = []
    for group in ids:
        flat = []
        for i in group:
            flat += [i, tokens[i], '"ok"', 1]
        comp.append(
            ("complete", [events, K.leases, *map(K.job, group)], [*head(), 3600, per, *flat])
        )
    rows.append(("complete", per, *timed(r, comp)))
    return rows


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    srv, url = start_valkey(Path(tempfile.mkdtemp()))
    try:
        r = redis.Redis.from_url(url)
        load(r)
        best: dict[tuple[str, int], tuple[float, float]] = {}
        for rnd in range(ROUNDS):
            for name, per, us, inner in run(r, 1, n, f"a{rnd}") + run(
                r, 100, max(n // 100, 20), f"b{rnd}"
            ):
                if (name, per) not in best or us < best[name, per][0]:
                    best[name, per] = (us, inner)
    finally:
        srv.kill()
    rows = [(name, per, us, inner) for (name, per), (us, inner) in best.items()]
    print("| script | jobs per call | µs per call | µs of its commands | µs per job |")
    print("|---|---|---|---|---|")
    for name, per, us, inner in sorted(rows, key=lambda x: (x[0], x[1])):
        print(f"| {name} | {per} | {us:.2f} | {inner:.2f} | {us / per:.2f} |")


if __name__ == "__main__":
    main()
