"""Bar chart for docs/benchmarks.png; run by compare.py with bench/.venvs/_plot/bin/python.

Reads {"data": {queue: {metric: value}}, "bare": float | null, "png": path} on stdin: the
rates, the latency p50 and the server cost per job (CPU and commands) of each queue.
"""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

PANELS = [
    ("enqueue_rate", "enqueue, one job per call (jobs/s)", True),
    ("process_rate", "no-op processing, 2 workers (jobs/s)", True),
    ("sleep_rate", "10 ms sleep jobs, 2 workers (jobs/s)", True),
    ("p50", "submit → result latency p50 (ms, lower is better)", False),
    ("cpu_job", "Valkey CPU per no-op job, end to end (µs, lower is better)", False),
    ("cmds_job", "Valkey commands per no-op job, end to end (lower is better)", False),
]


def main() -> None:
    spec = json.load(sys.stdin)
    data: dict[str, dict[str, float]] = spec["data"]
    fig, axes = plt.subplots(3, 2, figsize=(13, 11.5))
    for ax, (key, title, _higher) in zip(axes.flat, PANELS, strict=True):
        items = [(q, m[key]) for q, m in data.items() if key in m]
        items.sort(key=lambda kv: kv[1], reverse=_higher)
        names = [q for q, _ in items]
        vals = [v for _, v in items]
        colors = ["#d62728" if q == "jobq" else "#7f7f7f" for q in names]
        bars = ax.barh(names, vals, color=colors)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=10)
        if not _higher and vals and max(vals) / max(min(vals), 1e-9) > 50:
            ax.set_xscale("log")
        for b, v in zip(bars, vals, strict=True):
            if key in ("p50", "p95", "p99"):
                label = f"{v:.2f}"
            elif key in ("cpu_job", "cmds_job"):
                label = f"{v:.1f}"
            else:
                label = f"{v:,.0f}"
            ax.text(
                b.get_width(), b.get_y() + b.get_height() / 2, " " + label, va="center", fontsize=8
            )
        if key == "enqueue_rate" and spec.get("bare"):
            ax.axvline(spec["bare"], color="#1f77b4", linestyle="--", linewidth=1)
            ax.text(
                spec["bare"],
                len(names) - 0.5,
                " bare LPUSH",
                color="#1f77b4",
                fontsize=8,
                va="bottom",
            )
        ax.margins(x=0.18)
    fig.suptitle(
        "jobq vs Python job queues: same machine, same Valkey, 2 worker processes (medians)",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(spec["png"], dpi=110)


if __name__ == "__main__":
    main()
