"""Tasks for the benchmarks (imported by the benchmark and by its worker processes)."""

from jobq import App

app = App()  # JOBQ_URL / JOBQ_PREFIX come from the benchmark's environment


@app.task()
def noop() -> None:
    return None
