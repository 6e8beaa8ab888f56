"""How many SQL statements a page costs: a list of posts by many authors must not cost one
query per author (the N+1 an operator sees as a page slowing with every author on it)."""

from __future__ import annotations

import re
from contextlib import contextmanager
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from app import db
from app.models import Message, Post, User
from tests.conftest import browser, login, make_user

AUTHORS = 20
# The statements of a page whatever its length: the login session, the task alerts, the
# page's own query and a few more; one per author would be 20 and more.
MAX_STATEMENTS = 10
T0 = datetime(2024, 5, 1, 12, 0, 0)


@pytest.fixture
def config_overrides():
    return {"POSTS_PER_PAGE": AUTHORS}


@pytest.fixture
def reader(app):
    """susan, who follows 20 authors with one post each and has one message from each."""
    susan = make_user()
    for i in range(AUTHORS):
        author = User(username=f"author{i}", email=f"author{i}@example.com")
        db.session.add(author)
        db.session.add(Post(body=f"post {i}", author=author, timestamp=T0 + timedelta(minutes=i)))
        db.session.add(Message(author=author, recipient=susan, body=f"message {i}",
                               timestamp=T0 + timedelta(minutes=i)))
        susan.follow(author)
    db.session.commit()
    db.session.remove()  # the page loads its authors itself, not from the test's session
    client = browser(app)
    login(client)
    return client


@contextmanager
def statements():
    executed: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):
        executed.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", count)
    try:
        yield executed
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", count)


@pytest.mark.parametrize("url", ["/index", "/explore", "/messages", "/user/author3"])
def test_a_page_of_posts_by_twenty_authors_costs_a_few_statements(reader, url):
    with statements() as executed:
        response = reader.get(url)
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    shown = set(re.findall(r'href="/user/(author\d+)"', html))
    assert len(shown) == (1 if url.startswith("/user/") else AUTHORS)
    assert len(executed) <= MAX_STATEMENTS, "\n".join(executed)


@pytest.mark.parametrize("url", ["/index", "/explore"])
def test_a_page_of_posts_does_not_count_them_all(reader, url):
    """Pages link to older and newer posts only: no COUNT of every post (on /explore, every
    post on the site) to number pages nobody sees."""
    with statements() as executed:
        assert reader.get(url).status_code == 200
    counts = [s for s in executed if "count(" in s.lower() and "post" in s.lower()]
    assert not counts, "\n".join(counts)
