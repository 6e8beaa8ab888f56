"""The worker class's former path, kept for deployments whose units still say
`rq worker -w app.worker.AppWorker`: it is app.jobs.worker.AppWorker now."""

import warnings

from app.jobs.worker import AppWorker

warnings.warn("app.worker.AppWorker has moved: use `-w app.jobs.worker.AppWorker`",
              FutureWarning, stacklevel=2)

__all__ = ["AppWorker"]
