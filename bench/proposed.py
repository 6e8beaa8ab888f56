"""What docs/performance.md still proposes for app/ and can be measured by swapping a class,
applied in a worker class of the bench so that its effect is measured beside the real thing
(`python -m bench dispatch --proposed`). Nothing in app/ is changed by this module.

Proposal 9: one Redis connection per work horse. A forked work horse opens two new
connections to Redis for every job: RQ's (the worker's client) and the app's (`app.redis`,
which the task lifecycle uses for its metrics, cancel flags and live events). Here the
horse's app uses the worker's client instead, so each job connects once.

    rq worker -w bench.proposed.ProposedWorker --with-scheduler ... microblog-tasks

(Proposal 3 of the first round, the lifecycle warmed up in the worker's parent, is in
AppWorker now, as are 1, 2 and 4, so in every run; the web server always runs as `make run`
runs it.)
"""

from __future__ import annotations

from app.jobs.worker import AppWorker, get_worker_app


class ProposedWorker(AppWorker):
    def main_work_horse(self, job, queue):
        app = get_worker_app()
        # Only in the horse (this runs after the fork): the worker keeps its own clients.
        app.redis = self.connection
        app.task_queue.connection = self.connection
        super().main_work_horse(job, queue)
