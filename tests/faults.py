"""What the fault tests (tests/test_faults_*.py) share: reading the Task rows, counting the mail
that arrived, and judging whether every task ended truthfully. docs/reliability.md says what each
fault test promises."""

from __future__ import annotations

import sqlalchemy as sa

from app import db
from app.models import Post, Task, TaskStatus, User

EXPORT_SUBJECT = "[Microblog] Your blog posts"


def tasks_by_user() -> dict[str, Task]:
    db.session.expire_all()
    return {t.user.username: t for t in db.session.scalars(sa.select(Task))}


def bulk_posts(user: User, count: int) -> None:
    db.session.execute(sa.insert(Post), [
        {"body": f"post {i}", "user_id": user.id} for i in range(count)])
    db.session.commit()


def mails_by_recipient(messages, subject: str = EXPORT_SUBJECT) -> dict[str, int]:
    counts: dict[str, int] = {}
    for message in messages:
        if message["Subject"] == subject:
            counts[message["To"]] = counts.get(message["To"], 0) + 1
    return counts


def assert_tasks_truthful(tasks: dict[str, Task], messages) -> None:
    """Every task ended; a finished export mailed its user exactly once, a failed one never,
    and says why."""
    mails = mails_by_recipient(messages)
    for username, task in tasks.items():
        assert task.complete and task.status in TaskStatus.TERMINAL, (username, task.status)
        address = f"{username}@example.com"
        if task.status == TaskStatus.FINISHED:
            assert mails.get(address) == 1, (username, mails)
        else:
            assert address not in mails, (username, task.status, mails)
            assert task.error and "Retrying" not in task.error, (username, task.error)


def in_own_app_context(function):
    """Run `function` in a thread: its requests get an app context (and flask-login user) of
    their own, not the test's, which every request in the test's thread shares."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(function).result(timeout=60)
