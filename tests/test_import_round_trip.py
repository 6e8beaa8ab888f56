"""The import's acceptance test: a round trip between two Microblog sites.

Alice's posts on site A are exported in each of our three formats; each file is imported into
a fresh account on site B (a second app with its own database, on the same kind of database
server as the suite's: SQLite, PostgreSQL or MariaDB), previewed, confirmed and run by a
worker as the page does it; that account is exported again on B. The posts come back the same:
bodies byte-equal, timestamps equal to the second, in the same order. Then a Mastodon archive
and an X archive, built from each service's documented format (tests/archives.py), go through
B the same way and come out as the text their authors wrote.
"""

from __future__ import annotations

import json
import tempfile
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from werkzeug.datastructures import FileStorage

from app import create_app, db
from app.exports.actions import start_export
from app.exports.storage import get_storage
from app.imports.actions import confirm_import, start_import
from app.models import Export, Import, Post, TaskStatus, User
from config import Config
from tests import archives
from tests.conftest import config_for_tests, empty_database, make_user, run_jobs_in_process

FORMATS = ("json", "csv", "activitystreams")

# What alice wrote on site A: the plain, and what trips formats up.
BODIES = [
    "A plain first post.",
    "Ünïcödé, 한국어, emoji 🎉 and a zero-width joiner 👩‍💻",
    'Quotes " and \' and a back\\slash, <b>markup</b> & an ampersand',
    "Two lines\nand a Windows one\r\nand a tab\there",
    "=SUM(A1:A9) looks like a formula",
    "'starts with a quote",
    "+ and - and @ at the start of cells",
    "x" * 1000,  # longer than the compose form allows: imported whole, never cut
    "Same second as the next one",
    "Same second as the previous one",
]
TIMES = [
    datetime(2023, 1, 2, 3, 4, 5, 678901),
    datetime(2023, 1, 2, 3, 4, 6),
    datetime(2023, 6, 30, 23, 59, 59, 999999),
    datetime(2024, 2, 29, 12, 0, 0, 1),
    datetime(2024, 3, 1, 0, 0, 0),
    datetime(2024, 3, 1, 0, 0, 1),
    datetime(2024, 3, 1, 0, 0, 2),
    datetime(2024, 12, 31, 23, 59, 58),
    datetime(2025, 5, 5, 5, 5, 5, 100),
    datetime(2025, 5, 5, 5, 5, 5, 200),
]
LANGUAGES = ["en", "es", None, "ko", "en", "en", None, "en", "es", "es"]


def _sibling_database(url: str, tmp: Path) -> str:
    """A second, empty database beside the suite's, on the same server."""
    if url.startswith("sqlite"):
        return f"sqlite:///{tmp / 'site-b.db'}"
    parsed = sa.engine.make_url(url)
    name = f"{parsed.database}_site_b"
    admin = parsed.set(database="postgres" if parsed.get_backend_name() == "postgresql"
                       else None)
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        if parsed.get_backend_name() == "postgresql":
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        else:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
            conn.exec_driver_sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    engine.dispose()
    return parsed.set(database=name).render_as_string(hide_password=False)


@pytest.fixture
def config_overrides():
    """Site A: each test exports one account more than once, back to back."""
    return {"EXPORT_COOLDOWN": 0}


@pytest.fixture(scope="module")
def site_b_config(database):
    """Site B's settings: its own database (the migrations run on it) and its own storage."""
    tmp = Path(tempfile.mkdtemp(prefix="microblog-site-b-"))
    url = _sibling_database(Config.SQLALCHEMY_DATABASE_URI, tmp)
    config = config_for_tests(SQLALCHEMY_DATABASE_URI=url, EXPORT_FOLDER=str(tmp / "exports"),
                              SERVER_NAME="site-b.localdomain", EXPORT_COOLDOWN=0,
                              PUBLIC_BASE_URL="http://site-b.localdomain")
    site_b = create_app(config)
    with site_b.app_context():
        from flask_migrate import upgrade

        upgrade(directory=str(Path(__file__).resolve().parent.parent / "migrations"))
        db.engine.dispose()
    return config


@pytest.fixture
def site_b(app, site_b_config):
    """Site B, empty; site A is the suite's `app` (whose context stays pushed around it)."""
    site_b = create_app(site_b_config)
    with site_b.app_context():
        empty_database(db)
        yield site_b
        db.session.remove()


def _exported_file(site, user: User, fmt: str, into: Path) -> Path:
    """Export the user's posts in `fmt` on `site` (as the export centre's button does, run
    by a worker), and copy the file out of the site's storage."""
    export = start_export(user, fmt)
    run_jobs_in_process(site)
    db.session.rollback()
    export = db.session.get(Export, export.id)
    assert export.status == TaskStatus.FINISHED, export.task.error
    with open(into, "wb") as out:
        for chunk in get_storage().read(export.storage_key):
            out.write(chunk)
    return into


def _imported(site, username: str, archive: Path, filename: str) -> tuple[User, Import]:
    """A fresh account on `site` imports the file: upload, preview, confirm, import."""
    user = make_user(username)
    with open(archive, "rb") as stream:
        imp = start_import(user, FileStorage(stream, filename=filename))
    run_jobs_in_process(site)
    db.session.rollback()
    imp = db.session.get(Import, imp.id)
    assert imp.status == Import.READY, imp.task.error
    confirm_import(imp)
    run_jobs_in_process(site)
    db.session.rollback()
    imp = db.session.get(Import, imp.id)
    assert imp.status == Import.FINISHED, imp.task.error
    return user, imp


def _posts_in_export(path: Path) -> list[tuple[str, datetime, str | None]]:
    """(body, timestamp, language) of each post of a posts.json, in the file's order."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return [(p["body"], datetime.fromisoformat(p["timestamp"].removesuffix("Z")), p["language"])
            for p in data["posts"]]


def _to_the_second(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("fmt", FORMATS)
def test_an_export_imported_on_another_site_exports_the_same_posts(app, site_b, tmp_path, fmt):
    with app.app_context():
        alice = make_user("alice")
        db.session.add_all([Post(body=body, timestamp=at, language=language, author=alice)
                            for body, at, language in zip(BODIES, TIMES, LANGUAGES, strict=True)])
        db.session.commit()
        exported = _exported_file(app, alice, fmt, tmp_path / f"a.{fmt}")
        original = _exported_file(app, alice, "json", tmp_path / "a.json")
    original_posts = _posts_in_export(original)
    assert [body for body, _, _ in original_posts] == BODIES

    with site_b.app_context():
        bob, imp = _imported(site_b, "bob", exported, exported.name)
        assert imp.imported == len(BODIES) and imp.failed == 0
        again = _exported_file(site_b, bob, "json", tmp_path / "b.json")

    round_tripped = _posts_in_export(again)
    assert [body.encode() for body, _, _ in round_tripped] == [
        body.encode() for body, _, _ in original_posts]
    assert [at for _, at, _ in round_tripped] == [
        _to_the_second(at) for _, at, _ in original_posts]
    assert [language for _, _, language in round_tripped] == [
        language for _, _, language in original_posts]


@pytest.mark.timeout(600)
def test_a_second_import_of_the_same_export_adds_nothing(app, site_b, tmp_path):
    with app.app_context():
        alice = make_user("alice")
        db.session.add_all([Post(body=body, timestamp=at, author=alice)
                            for body, at in zip(BODIES, TIMES, strict=True)])
        db.session.commit()
        exported = _exported_file(app, alice, "csv", tmp_path / "posts.csv")

    with site_b.app_context():
        bob, first = _imported(site_b, "bob", exported, "posts.csv")
        with open(exported, "rb") as stream:
            again = start_import(bob, FileStorage(stream, filename="posts.csv"))
        run_jobs_in_process(site_b)
        db.session.rollback()
        again = db.session.get(Import, again.id)
        assert again.preview()["already"] == len(BODIES)
        confirm_import(again)
        run_jobs_in_process(site_b)
        db.session.rollback()
        again = db.session.get(Import, again.id)
        assert again.status == Import.FINISHED
        assert again.imported == 0 and again.skipped() == {"duplicate": len(BODIES)}
        assert db.session.scalar(sa.select(sa.func.count(Post.id)).where(
            Post.user_id == bob.id)) == len(BODIES)


MASTODON_POSTS = [
    "Hello from Mastodon & friends <3",
    "A paragraph\n\nand another, with a line\nbreak",
    "A link https://example.org/a/very/long/path/that/mastodon/shortens?q=1 in the middle",
    "#hashtags and @mentions stay as their text",
]
X_POSTS = [
    "Hello from X & friends <3",
    {"text": "A link https://t.co/abc123 to expand",
     "urls": [("https://t.co/abc123", "https://example.org/expanded")]},
    "Quotes \"and\" apostrophes ' stay",
]
X_TEXTS = ["Hello from X & friends <3", "A link https://example.org/expanded to expand",
           "Quotes \"and\" apostrophes ' stay"]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("service", ["mastodon", "x"])
def test_an_archive_from_mastodon_or_x_comes_out_as_its_author_wrote_it(site_b, tmp_path,
                                                                         service):
    if service == "mastodon":
        archive = Path(archives.mastodon_archive(tmp_path / "archive.zip", posts=MASTODON_POSTS,
                                                 boosts=2, replies_to_others=1, direct=1))
        expected = MASTODON_POSTS
    else:
        archive = Path(archives.x_archive(tmp_path / "twitter.zip", tweets=X_POSTS,
                                          retweets=2, replies=1))
        expected = X_TEXTS
    with site_b.app_context():
        alice, imp = _imported(site_b, "alice", archive, archive.name)
        assert imp.imported == len(expected)
        assert sum(imp.skipped().values()) == (4 if service == "mastodon" else 3)
        again = _exported_file(site_b, alice, "json", tmp_path / "b.json")
        origins = set(db.session.scalars(sa.select(Post.origin).where(Post.user_id == alice.id)))
    assert [body for body, _, _ in _posts_in_export(again)] == expected
    assert [at for _, at, _ in _posts_in_export(again)] == [
        archives.stamp(i) for i in range(len(expected))]
    assert origins == {service}
