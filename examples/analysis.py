"""Word counts over a generated corpus, split across jobq workers and merged in a fan-in job.

    python examples/analysis.py                      # embedded Valkey, starts 2 workers itself
    python examples/analysis.py --docs 200000 --chunks 32
    python examples/analysis.py --url redis://host:6379/0 --workers 0   # your running workers:
        jobq worker examples.analysis:app -q analysis   (from the repository root)

The corpus is generated deterministically from a seed (a Zipf-like vocabulary of made-up words),
so every worker can build its own chunk from (seed, first document, last document) and nothing
large travels through the broker. The run is one chord submitted in one round trip: a `count_chunk`
job per chunk, then `merge_counts`, which the completion script releases once every chunk has
succeeded and which receives the chunks' results in order. The merged result is checked against
a plain single-process count of the same corpus.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from jobq import App, current_job
from jobq.canvas import chord

QUEUE = "analysis"
ROOT = Path(__file__).resolve().parent.parent

app = App()  # URL and prefix from JOBQ_URL / JOBQ_PREFIX (or the embedded default)


# -- the data set ------------------------------------------------------------------------------

SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "ta", "shi", "vo", "zen", "pa", "qui", "dor"]
VOCABULARY = [
    "".join(p) for n in (1, 2, 3) for p in itertools.product(SYLLABLES, repeat=n)
]  # 12 + 144 + 1728 words
# Zipf-like: the r-th word is about 1/r as frequent as the first.
CUM_WEIGHTS = list(itertools.accumulate(1 / (r + 1) for r in range(len(VOCABULARY))))


def document(seed: int, index: int) -> list[str]:
    """Document `index` of the corpus of `seed`: the same words in any process."""
    rng = random.Random(f"{seed}:{index}")
    return rng.choices(VOCABULARY, cum_weights=CUM_WEIGHTS, k=rng.randint(5, 60))


# -- the jobs ------------------------------------------------------------------------------------


@app.task(queue=QUEUE)
def count_chunk(seed: int, first: int, last: int) -> dict[str, Any]:
    """Count the words of documents [first, last)."""
    counts: Counter[str] = Counter()
    longest = 0
    ctx = current_job()
    for i in range(first, last):
        words = document(seed, i)
        counts.update(words)
        longest = max(longest, len(words))
        if ctx is not None and (i - first) == (last - first) // 2:
            ctx.progress(0.5, f"counted {i - first} of {last - first} documents")
    return {"documents": last - first, "longest": longest, "counts": dict(counts)}


@app.task(queue=QUEUE)
def merge_counts(chunks: list[dict[str, Any]], top: int = 10) -> dict[str, Any]:
    """The fan-in: merge every chunk's counts (received in chunk order) into the summary."""
    total: Counter[str] = Counter()
    for chunk in chunks:
        total.update(chunk["counts"])
    return summary(
        documents=sum(c["documents"] for c in chunks),
        longest=max(c["longest"] for c in chunks),
        counts=total,
        top=top,
    )


def summary(documents: int, longest: int, counts: Counter[str], top: int) -> dict[str, Any]:
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return {
        "documents": documents,
        "words": sum(counts.values()),
        "distinct": len(counts),
        "longest_document": longest,
        "top": [[w, n] for w, n in ranked],
    }


def analyse_locally(seed: int, docs: int, top: int = 10) -> dict[str, Any]:
    """The same analysis in one process, the plain way: the reference result."""
    counts: Counter[str] = Counter()
    longest = 0
    for i in range(docs):
        words = document(seed, i)
        counts.update(words)
        longest = max(longest, len(words))
    return summary(docs, longest, counts, top)


def chunk_bounds(docs: int, chunks: int) -> list[tuple[int, int]]:
    """[first, last) of each chunk: `chunks` near-equal parts of range(docs)."""
    step, extra = divmod(docs, chunks)
    bounds, first = [], 0
    for i in range(chunks):
        last = first + step + (1 if i < extra else 0)
        bounds.append((first, last))
        first = last
    return [b for b in bounds if b[0] < b[1]]


# -- running it ----------------------------------------------------------------------------------


def start_workers(n: int, url: str, prefix: str) -> list[subprocess.Popen[bytes]]:
    """`jobq worker examples.analysis:app` x n (process pools, one per core), from the repo."""
    env = {
        **os.environ,
        "JOBQ_URL": url,
        "JOBQ_PREFIX": prefix,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    }
    cmd = [sys.executable, "-m", "jobq", "worker", "examples.analysis:app", "-q", QUEUE]
    cmd += ["--pool", "process", "-c", str(max(1, (os.cpu_count() or 2) // n))]
    return [
        subprocess.Popen(
            [*cmd, "--name", f"analysis-{os.getpid()}-{i}"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in range(1, n + 1)
    ]


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def run(args: argparse.Namespace) -> int:
    from jobq.embedded import server_url, stop_server
    from jobq.store import redact

    app.configure(url=args.url, prefix=args.prefix)
    started_server = app.settings.url is None and server_url(app.settings.data_dir) is None
    url = app.url  # starts the embedded server if no URL was given
    bounds = chunk_bounds(args.docs, args.chunks)
    print(
        f"analysis: {args.docs} documents (seed {args.seed}) in {len(bounds)} chunks, "
        f"on {redact(url)}, prefix {app.settings.prefix!r}"
    )
    workers = start_workers(args.workers, url, app.settings.prefix) if args.workers else []
    print(
        f"started {len(workers)} worker processes"
        if workers
        else f"using running workers of queue {QUEUE!r}"
    )
    try:
        t0 = time.perf_counter()
        job = chord(
            [count_chunk.s(args.seed, first, last) for first, last in bounds],
            merge_counts.s(top=args.top),
        ).submit()
        deadline = time.monotonic() + args.timeout
        result = None
        while result is None:
            try:
                result = job.result(timeout=1.0)
            except TimeoutError:
                dead = [p for p in workers if p.poll() is not None]
                if dead:
                    print(f"error: a worker exited (code {dead[0].returncode})", file=sys.stderr)
                    return 1
                if time.monotonic() > deadline:
                    print(f"error: no result after {args.timeout:g}s", file=sys.stderr)
                    return 1
        distributed_s = time.perf_counter() - t0
    finally:
        stop_workers(workers)
        if workers:
            print("workers stopped")
        if started_server:
            stop_server(app.settings.data_dir)
        app.close()

    t1 = time.perf_counter()
    expected = analyse_locally(args.seed, args.docs, args.top)
    local_s = time.perf_counter() - t1

    print(
        f"documents {result['documents']:,}  words {result['words']:,}  "
        f"distinct {result['distinct']:,}  longest document {result['longest_document']} words"
    )
    print("top words: " + ", ".join(f"{w} {n:,}" for w, n in result["top"]))
    print(f"distributed: {distributed_s:.2f}s (incl. worker start-up)   local: {local_s:.2f}s")
    if result != expected:
        print(f"MISMATCH: the local computation gives\n{expected}", file=sys.stderr)
        return 1
    print("verified: the merged result equals the single-process computation")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--url", help="Broker URL (default: JOBQ_URL, else the embedded Valkey).")
    p.add_argument("--prefix", help="Key prefix (default: JOBQ_PREFIX, else 'jobq').")
    p.add_argument("--docs", type=int, default=50_000, help="Documents in the corpus.")
    p.add_argument("--chunks", type=int, default=16, help="Jobs to split it into.")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--top", type=int, default=10, help="How many top words to report.")
    p.add_argument(
        "--workers", type=int, default=2, help="Worker processes to start (0 = use running ones)."
    )
    p.add_argument("--timeout", type=float, default=300.0, help="Seconds to wait for the result.")
    args = p.parse_args(argv)
    if args.docs < 1 or args.chunks < 1 or args.workers < 0:
        p.error("--docs and --chunks must be >= 1, --workers >= 0")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
