"""The job system: what runs in the background on RQ, one module per concept.

    lifecycle.py   launch (commit, then enqueue), progress, finish, fail, cancel, `end`: the one
                   place that knows both the Task row and the RQ job
    types.py       the kinds of task: time limit and retry policy of each
    stop.py        how a request to stop reaches a running job, on any host
    failures.py    what went wrong, in words a user reads; whether a retry could help
    reconcile.py   tasks whose job vanished or whose worker died; a queued job a gone
                   worker took
    operations.py  what an operator does to a task (retry, cancel, purge)
    stats.py       the figures /admin/jobs and `flask tasks stats` read
    metrics.py     the counters workers keep, and /metrics' collector
    bootstrap.py   what a worker process needs first: its Flask app; process.py, the
                   process tuning it and the embedded Redis share
    worker.py      AppWorker, the worker class; priority.py, its CPU priority
    cron.py        the schedule (`rq cron app.jobs.cron`)

The functions a worker runs stay in app/tasks.py: RQ stores `app.tasks.<name>` in every job.
Imports run one way: worker -> tasks -> lifecycle -> failures -> bootstrap.
"""
