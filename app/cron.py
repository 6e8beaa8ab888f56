"""The schedule's former path, kept for deployments whose cron unit still says
`rq cron app.cron`: it is app.jobs.cron now."""

import warnings

from app.jobs.cron import EXPIRE_EVERY, QUEUE  # noqa: F401  -- registers the schedule

warnings.warn("app.cron has moved: use `rq cron app.jobs.cron`", FutureWarning, stacklevel=2)
