"""The worker's module: `jobq worker tasks:app` imports it. Defining tasks submits nothing."""

from jobq import App

app = App()  # no URL: JOBQ_URL, else the embedded Valkey in ./.jobq
# app = App("redis://host:6379/0")  # or any Redis >= 7 / Valkey URL (also rediss://, unix://)


@app.task(retries=3, timeout=30)
def add(x: int, y: int) -> int:
    return x + y
