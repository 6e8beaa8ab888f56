"""Exactly once: an import killed mid-way (its work horse, or its whole worker, SIGKILLed) is
retried by itself and ends with exactly the archive's posts, none lost, none twice, its
counts true all along; a cancel keeps what was committed and says how many. Real `rq worker`
processes, real Redis; the archive a posts.json big enough to be caught mid-way in small
batches (IMPORT_BATCH_SIZE)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import sqlalchemy as sa
from rq.job import Job, JobStatus

from app import db
from app.imports import centre, importer
from app.imports.readers import Limits, open_archive
from app.jobs import lifecycle
from app.models import Import, Post, Task, TaskStatus, User
from tests.archives import posts_json
from tests.conftest import login, make_user, start_worker, stop_process, wait_for, worker_env
from tests.test_imports import confirm, fresh, previewed, stored_files
from tests.test_tasks import children_of

COUNT = 30_000
BATCH = 20  # 1,500 transactions: a kill lands mid-way


def _task(task_id: str) -> Task:
    db.session.expire_all()
    return db.session.get(Task, task_id)


def posts_and_count(imp: Import, user: User) -> tuple[int, int]:
    """The account's posts and the import's count of them, read in one statement (one
    snapshot of the database): what the page would show beside what is there."""
    db.session.expire_all()
    posts = sa.select(sa.func.count(Post.id)).where(Post.user_id == user.id).scalar_subquery()
    row = db.session.execute(sa.select(posts, Import.imported).where(Import.id == imp.id)).one()
    db.session.rollback()
    return row[0], row[1]


def assert_exactly_the_archives_posts(imp: Import, user: User, count: int) -> None:
    bodies = db.session.scalars(sa.select(Post.body).where(Post.user_id == user.id)).all()
    assert len(bodies) == count  # none twice...
    assert set(bodies) == {f"post {n}" for n in range(1, count + 1)}  # ...none lost
    imp = fresh(imp)
    assert (imp.imported, imp.position, imp.failed, imp.skipped()) == (count, count, 0, {})
    assert imp.status == Import.FINISHED


def test_an_import_stopped_after_some_batches_goes_on_where_it_stopped(app, tmp_path):
    """The rule a retried task relies on, in this process: whatever was committed stays,
    and a second run goes on after `position`, each post once."""
    susan = make_user("susan")
    app.config["IMPORT_BATCH_SIZE"] = 7
    imp = previewed(app, susan, posts_json(tmp_path / "posts.json", user="susan", count=100))
    centre.prepare_confirm(imp)
    db.session.commit()

    class Killed(Exception):
        pass

    def die_after_three_batches(position: int) -> None:
        if position >= 21:
            raise Killed

    limits = Limits.from_config(app.config)
    with centre.local_archive(imp) as path, open_archive(path, limits) as archive:
        try:
            importer.run_import(imp, archive, die_after_three_batches)
        except Killed:
            pass
    assert posts_and_count(imp, susan) == (21, 21) and fresh(imp).position == 21
    with centre.local_archive(imp) as path, open_archive(path, limits) as archive:
        importer.run_import(fresh(imp), archive)
    centre.record_finished(fresh(imp))
    assert_exactly_the_archives_posts(imp, susan, 100)


def test_a_killed_work_horse_mid_import_is_retried_and_every_post_is_there_once(app, tmp_path):
    """The out-of-memory case: the process running the import dies, its worker lives on,
    records it and runs the retry."""
    app.config["MAIL_RETRY_INTERVALS"] = [0]  # requeue at once: this worker has no scheduler
    susan = make_user("susan")
    imp = previewed(app, susan, posts_json(tmp_path / "posts.json", user="susan", count=COUNT))
    worker = start_worker(env=worker_env(IMPORT_BATCH_SIZE=BATCH),
                          args=["-w", "app.jobs.worker.AppWorker"])
    truths = []
    try:
        task = confirm(imp)
        wait_for(lambda: fresh(imp).position > 0, interval=0.02, message="the import under way")
        [horse] = wait_for(lambda: children_of(worker.pid), message="work horse")
        os.kill(horse, signal.SIGKILL)
        truths.append(posts_and_count(imp, susan))  # the dead attempt's, as it left them

        def retried_and_done() -> bool:
            truths.append(posts_and_count(imp, susan))  # and all the way through the retry
            return _task(task.id).complete

        wait_for(retried_and_done, interval=0.2, message="the retry to finish")
    finally:
        log = stop_process(worker)
    task = _task(task.id)
    assert task.status == TaskStatus.FINISHED and task.attempts == 2, log
    assert "Work-horse terminated unexpectedly" in log
    assert 0 < truths[0][0] < COUNT  # it was caught mid-way
    assert all(there == counted for there, counted in truths), truths
    assert_exactly_the_archives_posts(imp, susan, COUNT)
    assert stored_files(app) == []


def test_a_sigkilled_worker_mid_import_is_retried_and_every_post_is_there_once(
        app, client, tmp_path):
    """The worker and its work horse killed at once: RQ's abandoned-job handling (found by
    the page's poll, or by another worker's maintenance) retries the import on another
    worker."""
    susan = make_user("susan")
    imp = previewed(app, susan, posts_json(tmp_path / "posts.json", user="susan", count=COUNT))
    login(client)
    victim = start_worker(env=worker_env(IMPORT_BATCH_SIZE=BATCH))
    try:
        task = confirm(imp)
        wait_for(lambda: fresh(imp).position > 0, interval=0.02, message="the import under way")
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(timeout=10)
        there, counted = posts_and_count(imp, susan)
        assert there == counted < COUNT
        # The page keeps polling; the task goes back to the queue, saying why.
        wait_for(lambda: (client.get("/notifications"), _task(task.id).status)[1]
                 == TaskStatus.QUEUED, interval=0.5, message="the import to be requeued")
        assert _task(task.id).error == ("The worker running this task stopped unexpectedly. "
                                        "Retrying automatically.")
        rescuer = start_worker(env=worker_env(IMPORT_BATCH_SIZE=BATCH))
        try:
            wait_for(lambda: _task(task.id).complete, message="the retry to finish")
        finally:
            stop_process(rescuer)
    finally:
        if victim.poll() is None:
            os.killpg(victim.pid, signal.SIGKILL)
    assert _task(task.id).status == TaskStatus.FINISHED
    assert_exactly_the_archives_posts(imp, susan, COUNT)


def test_a_cancel_mid_import_keeps_the_imported_posts_and_the_row_says_how_many(app,
                                                                                tmp_path):
    susan = make_user("susan")
    imp = previewed(app, susan, posts_json(tmp_path / "posts.json", user="susan", count=COUNT))
    worker = start_worker(env=worker_env(IMPORT_BATCH_SIZE=BATCH))
    try:
        task = confirm(imp)
        wait_for(lambda: fresh(imp).position > 0, interval=0.02, message="the import under way")
        lifecycle.cancel(_task(task.id), "Cancelled by you.")
        centre.after_cancel(fresh(imp))
        job = Job.fetch(task.id, connection=app.redis)
        wait_for(lambda: job.get_status(refresh=True) in (JobStatus.FINISHED, JobStatus.STOPPED),
                 message="the import to stop")
    finally:
        stop_process(worker)
    imp = fresh(imp)
    assert imp.status == TaskStatus.CANCELLED and _task(task.id).error == "Cancelled by you."
    there, counted = posts_and_count(imp, susan)
    assert 0 < there == counted < COUNT
    assert imp.position == counted and imp.finished_at is None
    assert imp.storage_key is None and stored_files(app) == []
    assert not list(Path(app.instance_path, "outbox").glob("*.eml"))  # no "done" mail
