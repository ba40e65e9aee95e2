"""Submits jobs to the workers of tasks.py and waits for their results: `python submit.py`."""

from tasks import add

job = add.submit(2, 3)  # queued on the worker's queue; returns at once
print(job.id, job.status())  # the id and its state (queued, running or succeeded)
print(job.result(timeout=10))  # -> 5, or raises JobFailed with the remote traceback
jobs = add.map([(1, 2), (3, 4)])  # batch submit in one round trip
print([j.result(timeout=10) for j in jobs])  # -> [3, 7]
