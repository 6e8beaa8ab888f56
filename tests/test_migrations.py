"""The Alembic migrations, on the database under test (SQLite, PostgreSQL or MariaDB):
they build the whole schema from empty, go down to nothing and up again, and agree with
the models (autogenerate finds nothing to do).

These tests drop and rebuild the schema that the session `database` fixture built; every
one of them leaves it upgraded to head again, even when it fails, so the tests that run
after them keep working."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from tests.conftest import ROOT, make_user, worker_env

MIGRATIONS = str(ROOT / "migrations")
# Tables whose names the seed and the rest of the code rely on.
EXPECTED_TABLES = {"user", "followers", "post", "message", "notification", "task",
                   "user_session"}


def _drop_everything(db) -> None:
    """Drop every table in the database, the models' and any other (alembic_version too)."""
    db.session.remove()
    reflected = sa.MetaData()
    reflected.reflect(bind=db.engine)
    reflected.drop_all(bind=db.engine)
    assert _table_names(db) == set()


def _table_names(db) -> set[str]:
    return set(sa.inspect(db.engine).get_table_names())


def _current_revision(db) -> str | None:
    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _head() -> str:
    heads = ScriptDirectory.from_config(_alembic_config()).get_heads()
    assert len(heads) == 1, f"the migrations must have a single head, found {heads}"
    return heads[0]


def _alembic_config():
    from flask import current_app

    return current_app.extensions["migrate"].migrate.get_config(MIGRATIONS)


def _upgrade() -> None:
    from flask_migrate import upgrade

    upgrade(directory=MIGRATIONS)


def _flask(*args: str) -> subprocess.CompletedProcess:
    """`flask <args>` as a separate process from the repo root, on the database under test."""
    env = worker_env(FLASK_APP="microblog.py")
    flask = str(Path(sys.executable).parent / "flask")
    result = subprocess.run([flask, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, (
        f"flask {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture
def schema(app):
    """Drops everything first; afterwards (pass or fail) rebuilds the schema at head."""
    from app import db

    _drop_everything(db)
    yield db
    db.session.remove()
    try:
        if _current_revision(db) != _head() or not set(db.metadata.tables) <= _table_names(db):
            _drop_everything(db)
            _upgrade()
    except Exception:
        _drop_everything(db)
        _upgrade()
    # Connections that saw the old tables are not reused (prepared statements, caches).
    db.engine.dispose()


def test_upgrade_from_empty_builds_every_table_and_constraint(schema):
    db = schema
    assert _current_revision(db) is None
    _upgrade()
    assert _current_revision(db) == _head()

    inspector = sa.inspect(db.engine)
    tables = set(inspector.get_table_names())
    model_tables = set(db.metadata.tables)
    assert EXPECTED_TABLES <= model_tables
    assert model_tables <= tables, f"missing tables: {sorted(model_tables - tables)}"
    assert "alembic_version" in tables

    # Every model column is there, with the model's nullability.
    for name, table in db.metadata.tables.items():
        columns = {c["name"]: c for c in inspector.get_columns(name)}
        for column in table.columns:
            assert column.name in columns, f"{name}.{column.name} missing"
            assert columns[column.name]["nullable"] == column.nullable, f"{name}.{column.name}"

    # At most one active task of a name per user: the database enforces it.
    uniques = {u["name"]: u["column_names"] for u in inspector.get_unique_constraints("task")}
    assert uniques.get("uq_task_one_active_per_name") == ["user_id", "active_name"], uniques

    # The export reads a user's posts in (timestamp, id) order through this index.
    post_indexes = {i["name"]: i for i in inspector.get_indexes("post")}
    assert post_indexes["ix_post_user_timestamp"]["column_names"] == ["user_id", "timestamp", "id"]
    assert not post_indexes["ix_post_user_timestamp"]["unique"]

    user_indexes = {i["name"]: i for i in inspector.get_indexes("user")}
    assert user_indexes["ix_user_username"]["unique"]
    assert user_indexes["ix_user_email"]["unique"]

    def pk(table):
        return inspector.get_pk_constraint(table)["constrained_columns"]

    assert pk("followers") == ["follower_id", "followed_id"]
    assert pk("task") == ["id"]

    def fks(table):
        return {(tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]))
                for f in inspector.get_foreign_keys(table)}

    assert fks("followers") == {(("follower_id",), "user", ("id",)),
                                (("followed_id",), "user", ("id",))}
    assert fks("message") == {(("sender_id",), "user", ("id",)),
                              (("recipient_id",), "user", ("id",))}
    for table in ("post", "notification", "task", "user_session"):
        assert (("user_id",), "user", ("id",)) in fks(table), table
    # A user's login sessions go with the user.
    session_fk = inspector.get_foreign_keys("user_session")[0]
    assert session_fk["options"].get("ondelete") == "CASCADE", session_fk


def test_unique_constraint_holds_after_upgrade(schema):
    """The constraint works, not just exists: two active tasks of one name collide, and
    finished ones (active_name NULL) do not."""
    from app.models import Task, TaskStatus

    db = schema
    _upgrade()
    user = make_user("constraint")
    for i in range(2):
        db.session.add(Task(id=f"done-{i}", name="export_posts", user_id=user.id,
                            complete=True, status=TaskStatus.FINISHED, active_name=None))
    db.session.add(Task(id="active-1", name="export_posts", user_id=user.id,
                        active_name="export_posts"))
    db.session.commit()
    db.session.add(Task(id="active-2", name="export_posts", user_id=user.id,
                        active_name="export_posts"))
    with pytest.raises(sa.exc.IntegrityError):
        db.session.commit()
    db.session.rollback()
    _empty(db)


def test_downgrade_to_base_then_upgrade_again(schema):
    """`flask db downgrade base` removes every table; `flask db upgrade` builds them again
    (the real CLI, run from the repo root as the docs say)."""
    db = schema
    _flask("db", "upgrade")
    assert set(db.metadata.tables) <= _table_names(db)
    assert _current_revision(db) == _head()

    _flask("db", "downgrade", "base")
    assert _current_revision(db) is None
    assert _table_names(db) & set(db.metadata.tables) == set()

    _flask("db", "upgrade")
    assert _current_revision(db) == _head()
    assert set(db.metadata.tables) <= _table_names(db)

    # And one revision at a time, down and up, for every revision in the chain.
    script = ScriptDirectory.from_config(_alembic_config())
    revisions = list(script.walk_revisions())  # head first
    for _ in revisions:
        _downgrade("-1")
    assert _current_revision(db) is None
    for _ in revisions:
        _upgrade_to("+1")
    assert _current_revision(db) == _head()


def _downgrade(revision: str) -> None:
    from flask_migrate import downgrade

    downgrade(directory=MIGRATIONS, revision=revision)


def _upgrade_to(revision: str) -> None:
    from flask_migrate import upgrade

    upgrade(directory=MIGRATIONS, revision=revision)


def test_models_and_migrations_agree(schema):
    """What `flask db migrate` would generate after `flask db upgrade`: nothing."""
    from flask import current_app

    db = schema
    _upgrade()
    opts = dict(current_app.extensions["migrate"].configure_args)
    opts.setdefault("compare_type", True)
    opts.pop("process_revision_directives", None)
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts=opts)
        diff = compare_metadata(context, db.metadata)
    assert diff == [], "models and migrations differ; run `flask db migrate`:\n" + "\n".join(
        map(repr, diff))


def test_emoji_and_long_text_round_trip(schema):
    """The migrated columns keep what users type: 4-byte UTF-8 (emoji; utf8mb4 on MariaDB),
    a post of the full 280 characters, a sub-second notification timestamp."""
    from app.models import Notification, Post

    db = schema
    _upgrade()
    user = make_user("emoji", posts=["🎉" * 280])
    user.add_notification("unread_message_count", {"n": "😀"})
    db.session.execute(sa.update(Notification).values(timestamp=1_800_000_000.123456))
    db.session.commit()
    db.session.expire_all()
    assert db.session.scalar(sa.select(Post.body)) == "🎉" * 280
    stored = db.session.scalar(sa.select(Notification))
    assert stored.get_data() == {"n": "😀"}
    assert abs(stored.timestamp - 1_800_000_000.123456) < 1e-5
    _empty(db)


def test_timestamps_keep_microseconds(schema):
    """Every DateTime column keeps sub-second precision (MySQL's plain DATETIME drops it), so
    that a message sent in the same second as the inbox was read still counts as unread."""
    from datetime import datetime, timedelta

    from app.models import Message

    db = schema
    _upgrade()
    if db.engine.dialect.name in {"mysql", "mariadb"}:
        inspector = sa.inspect(db.engine)
        for name, table in db.metadata.tables.items():
            reflected = {c["name"]: c["type"] for c in inspector.get_columns(name)}
            for column in table.columns:
                if isinstance(column.type, sa.DateTime):
                    fsp = getattr(reflected[column.name], "fsp", None)
                    assert fsp == 6, f"{name}.{column.name} is {reflected[column.name]!r}"

    reader = make_user("reader")
    sender = make_user("sender")
    read_at = datetime(2030, 1, 2, 3, 4, 5, 100000)
    reader.last_message_read_time = read_at
    db.session.add(Message(author=sender, recipient=reader, body="before",
                           timestamp=read_at - timedelta(microseconds=50000)))
    db.session.add(Message(author=sender, recipient=reader, body="after",
                           timestamp=read_at + timedelta(microseconds=500000)))
    db.session.commit()
    db.session.expire_all()
    assert reader.last_message_read_time == read_at
    assert reader.unread_message_count() == 1
    _empty(db)


def _empty(db) -> None:
    db.session.remove()
    with db.engine.begin() as conn:
        for table in reversed(db.metadata.sorted_tables):
            conn.execute(table.delete())


def test_database_under_test_is_the_configured_one(app):
    """The matrix really runs where it says (guards against a silent fallback to SQLite)."""
    from app import db

    wanted = os.environ.get("MICROBLOG_TEST_DATABASE_URL")
    backend = db.engine.url.get_backend_name()
    if not wanted:
        assert backend == "sqlite"
    elif wanted.startswith(("postgres://", "postgresql")):
        assert backend == "postgresql"
    elif wanted.startswith(("mysql", "mariadb")):
        assert backend in {"mysql", "mariadb"}


def test_an_open_transaction_sees_what_another_connection_committed(app):
    """READ COMMITTED everywhere (MySQL's default REPEATABLE READ would keep a polling
    request or job on a stale snapshot of a Task row that a worker has since changed)."""
    from app import db
    from app.models import User

    make_user("first")
    assert db.session.scalar(sa.select(sa.func.count(User.id))) == 1  # transaction open
    with db.engine.connect() as other:
        other.execute(sa.insert(User).values(username="second", email="second@example.com",
                                             token_salt="x"))
        other.commit()
    assert db.session.scalar(sa.select(sa.func.count(User.id))) == 2
