"""The scheduled jobs, for RQ's cron scheduler (RQ 3: `rq cron`):

    rq cron --connection-class app.redis_connection.Redis app.jobs.cron

It only enqueues: the jobs run on the workers like any other (and so see the same
database, storage and settings). An interval job runs once as soon as the scheduler starts,
then every interval. One cron process per deployment is enough; a second one would only
enqueue each job twice, which is harmless (expiring is idempotent).

Why RQ's cron rather than the worker's `--with-scheduler`: that scheduler runs jobs enqueued
`at`/`in` a time (our retries), but nothing repeats; a repeating job would have to re-enqueue
itself, and one lost run would end the schedule for good.
"""

from rq import cron

from app.tasks import expire_exports, expire_imports, purge_expired_tokens

QUEUE = "microblog-tasks"
EXPIRE_EVERY = 300  # seconds: an export outlives its EXPORT_RETENTION_DAYS by at most this
# and an unconfirmed upload its IMPORT_CONFIRM_MINUTES.
PURGE_TOKENS_EVERY = 24 * 3600  # a token is deleted within a day of its 30 days expired

cron.register(expire_exports, QUEUE, interval=EXPIRE_EVERY, job_timeout=600, result_ttl=3600,
              failure_ttl=7 * 24 * 3600)
cron.register(expire_imports, QUEUE, interval=EXPIRE_EVERY, job_timeout=600, result_ttl=3600,
              failure_ttl=7 * 24 * 3600)
cron.register(purge_expired_tokens, QUEUE, interval=PURGE_TOKENS_EVERY, job_timeout=600,
              result_ttl=3600, failure_ttl=7 * 24 * 3600)
