"""The domain: users, posts, messages, notifications and background tasks."""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import UTC, datetime, timedelta
from functools import cache
from hashlib import md5
from time import time

import redis
import rq
import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import current_app
from flask_login import UserMixin
from sqlalchemy.dialects import mysql
from werkzeug.security import check_password_hash, generate_password_hash

from app import db, events, login
from app.events import changes

# Every `Mapped[datetime]` column keeps microseconds: MySQL/MariaDB's plain DATETIME would
# drop them (a message sent in the second the inbox was read would not count as unread).
db.Model.registry.update_type_annotation_map(
    {datetime: sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")})


def utcnow() -> datetime:
    """Naive UTC 'now', the form every timestamp column stores."""
    return datetime.now(UTC).replace(tzinfo=None)


followers = sa.Table(
    "followers",
    db.metadata,
    sa.Column("follower_id", sa.Integer, sa.ForeignKey("user.id"), primary_key=True),
    sa.Column("followed_id", sa.Integer, sa.ForeignKey("user.id"), primary_key=True),
)


class User(UserMixin, db.Model):
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    username: so.Mapped[str] = so.mapped_column(sa.String(64), index=True, unique=True)
    email: so.Mapped[str] = so.mapped_column(sa.String(120), index=True, unique=True)
    password_hash: so.Mapped[str | None] = so.mapped_column(sa.String(256))
    about_me: so.Mapped[str | None] = so.mapped_column(sa.String(140))
    last_seen: so.Mapped[datetime | None] = so.mapped_column(default=utcnow)
    last_message_read_time: so.Mapped[datetime | None]
    # Changes whenever the password does, so an already used reset link stops working.
    token_salt: so.Mapped[str] = so.mapped_column(
        sa.String(32), default=lambda: secrets.token_hex(8))
    # The admin role: True or False once `flask users promote/demote` decided it; NULL means
    # "as ADMINS says" (see is_admin). Three states, so that a demotion outlasts ADMINS.
    admin: so.Mapped[bool | None]

    posts: so.WriteOnlyMapped[Post] = so.relationship(back_populates="author")
    following: so.WriteOnlyMapped[User] = so.relationship(
        secondary=followers, primaryjoin=(followers.c.follower_id == id),
        secondaryjoin=(followers.c.followed_id == id), back_populates="followers")
    followers: so.WriteOnlyMapped[User] = so.relationship(
        secondary=followers, primaryjoin=(followers.c.followed_id == id),
        secondaryjoin=(followers.c.follower_id == id), back_populates="following")
    messages_sent: so.WriteOnlyMapped[Message] = so.relationship(
        foreign_keys="Message.sender_id", back_populates="author")
    messages_received: so.WriteOnlyMapped[Message] = so.relationship(
        foreign_keys="Message.recipient_id", back_populates="recipient")
    notifications: so.WriteOnlyMapped[Notification] = so.relationship(back_populates="user")
    tasks: so.WriteOnlyMapped[Task] = so.relationship(back_populates="user")

    def __repr__(self) -> str:
        return f"<User {self.username}>"

    @property
    def is_admin(self) -> bool:
        """Admins see and steer every user's background jobs (app/admin/, the outbox).
        An explicit promotion or demotion wins; otherwise an address in ADMINS makes one."""
        if self.admin is not None:
            return self.admin
        admins = {a.lower() for a in current_app.config["ADMIN_EMAILS"]}
        return self.email.lower() in admins

    def set_password(self, password: str) -> None:
        """A new password also ends every API token of the user (the caller commits): a token
        taken along with the old password must not outlive it."""
        self.password_hash = generate_password_hash(password)
        self.token_salt = secrets.token_hex(8)
        if self.id is not None:
            db.session.execute(sa.delete(ApiToken).where(ApiToken.user_id == self.id)
                               .execution_options(changes_owner=self.id))

    def check_password(self, password: str) -> bool:
        return self.password_hash is not None and check_password_hash(self.password_hash, password)

    # --- login sessions: a row per login, so that a session can be ended server-side ---

    # The token of the login this object was loaded for (set by start_session or load_user);
    # not a column: one user has many sessions.
    session_token = None  # type: str | None

    def __eq__(self, other: object) -> bool:
        # One user, whichever login it was loaded for (UserMixin compares get_id()).
        if isinstance(other, User):
            return self.id == other.id
        return NotImplemented

    __hash__ = object.__hash__

    def get_id(self) -> str:
        """What Flask-Login keeps in the session and remember-me cookies: the user and the
        login session. A cookie whose session row is gone no longer logs anyone in."""
        if not self.session_token:
            raise RuntimeError("log users in through User.start_session()")
        return f"{self.id}:{self.session_token}"

    def start_session(self) -> User:
        """Record a new login session (the caller commits) and return self, ready for
        login_user(). Also drops this user's sessions that have outlived any cookie."""
        db.session.execute(sa.delete(UserSession).where(
            UserSession.user_id == self.id, UserSession.created_at < UserSession.oldest_valid()))
        self.session_token = secrets.token_urlsafe(32)
        db.session.add(UserSession(id=UserSession.digest(self.session_token), user_id=self.id))
        return self

    def end_session(self) -> None:
        """Forget the session this object was loaded for (logout); the caller commits."""
        if self.session_token:
            db.session.execute(sa.delete(UserSession).where(
                UserSession.id == UserSession.digest(self.session_token)))
            self._sessions_changed()

    def end_other_sessions(self) -> None:
        """Log out every other browser of this user (after a password change or reset):
        all sessions but the current one, if any. The caller commits."""
        query = sa.delete(UserSession).where(UserSession.user_id == self.id)
        if self.session_token:
            query = query.where(UserSession.id != UserSession.digest(self.session_token))
        db.session.execute(query)
        self._sessions_changed()

    def _sessions_changed(self) -> None:
        # The user's open event streams (/events) end when their session is gone.
        events.queue_event(db.session, self.id, events.SESSIONS_CHANGED, None, time())

    def avatar(self, size: int) -> str:
        """A locally generated identicon (no internet needed), stable per email."""
        from flask import url_for

        digest = md5(self.email.lower().encode("utf-8")).hexdigest()
        return url_for("main.avatar", digest=digest, size=size)

    def follow(self, user: User) -> None:
        if not self.is_following(user):
            self.following.add(user)

    def unfollow(self, user: User) -> None:
        if self.is_following(user):
            self.following.remove(user)

    def is_following(self, user: User) -> bool:
        query = self.following.select().where(User.id == user.id)
        return db.session.scalar(query) is not None

    def followers_count(self) -> int:
        query = sa.select(sa.func.count()).select_from(self.followers.select().subquery())
        return db.session.scalar(query) or 0

    def following_count(self) -> int:
        query = sa.select(sa.func.count()).select_from(self.following.select().subquery())
        return db.session.scalar(query) or 0

    def posts_count(self) -> int:
        return db.session.scalar(
            sa.select(sa.func.count(Post.id)).where(Post.user_id == self.id)) or 0

    def following_posts(self) -> sa.Select:
        """Own posts plus the posts of followed users, newest first."""
        # One IN over (followed users + me), not an OR: the OR makes the database scan every
        # post on the site to count a page.
        authors = sa.union(
            sa.select(followers.c.followed_id).where(followers.c.follower_id == self.id),
            sa.select(sa.literal(self.id)))
        return (
            sa.select(Post)
            .where(Post.user_id.in_(authors))
            .order_by(Post.timestamp.desc(), Post.id.desc())
        )

    def get_reset_password_token(self, expires_in: int = 600) -> str:
        import jwt  # here, not at the top: its import is 0.1 s a worker's job would pay

        return jwt.encode(
            {"reset_password": self.id, "salt": self.token_salt, "exp": time() + expires_in},
            current_app.config["SECRET_KEY"], algorithm="HS256")

    @staticmethod
    def verify_reset_password_token(token: str) -> User | None:
        import jwt

        try:
            data = jwt.decode(token, current_app.config["SECRET_KEY"], algorithms=["HS256"])
            user = db.session.get(User, int(data["reset_password"]))
        except Exception:
            return None
        if user is None or data.get("salt") != user.token_salt:
            return None
        return user

    def unread_message_count(self) -> int:
        last_read_time = self.last_message_read_time or datetime(1900, 1, 1)
        query = sa.select(sa.func.count(Message.id)).where(
            Message.recipient_id == self.id, Message.timestamp > last_read_time)
        return db.session.scalar(query) or 0

    def notifications_since(self, since: float) -> list[Notification]:
        """This user's notifications newer than `since` (a Unix time), oldest first: what
        the page polls for (/notifications)."""
        return list(db.session.scalars(_NOTIFICATIONS_SINCE, {"user_id": self.id, "since": since}))

    def add_notification(self, name: str, data: object, topic: str | None = None) -> None:
        """Replace this user's notification of that name (and topic) with a new one.

        `topic` keeps notifications of one kind apart, e.g. one `task_progress` per task.
        The caller commits; the commit publishes it to the user's open pages (app/events/).
        """
        Notification.replace(self.id, name, data, topic)

    # --- background tasks (the seed's API; app/jobs/lifecycle.py owns the lifecycle) ---

    def launch_task(self, name: str, description: str, *args, **kwargs) -> Task:
        """Create the Task row, commit it, then enqueue the job: app.jobs.launch, which
        create_app() puts in the app's extensions. The lifecycle sits above the models (it
        imports them), so a model reaches it through the app, as it reaches the task queue,
        rather than by importing it: the modules import each other one way only."""
        launch = current_app.extensions["launch_task"]
        return launch(self, name, description, *args, **kwargs)

    def get_tasks_in_progress(self) -> list[Task]:
        # Every /notifications poll asks (app/jobs/reconcile.py, reconcile_user_tasks): a statement
        # built once, not per request (building one costs more than SQLite running it).
        return list(db.session.scalars(_TASKS_IN_PROGRESS, {"user_id": self.id}))

    def get_task_in_progress(self, name: str) -> Task | None:
        return db.session.scalar(
            sa.select(Task).where(Task.user_id == self.id, Task.name == name,
                                  Task.complete.is_(False)).limit(1))

    def visible_tasks(self) -> list[Task]:
        """The task alerts a page shows (and a new event stream starts with): tasks in
        progress, and of each kind of task the newest one that ended unseen in the last day
        (so an end that happened while away is seen once; an older one of the same kind is
        out of date). Oldest first."""
        since = utcnow() - timedelta(days=1)
        candidates = db.session.scalars(
            sa.select(Task).where(
                Task.user_id == self.id,
                sa.or_(Task.complete.is_(False),
                       sa.and_(Task.dismissed.is_(False), Task.finished_at > since)))
            .order_by(Task.created_at.desc()).limit(20))
        shown, ended_kinds = [], set()
        for task in candidates:
            if task.complete:
                if task.name in ended_kinds:
                    continue
                ended_kinds.add(task.name)
            shown.append(task)
        return shown[:10][::-1]


class UserSession(db.Model):
    """One login (one browser) of a user. The cookie holds a random token; the table only its
    SHA-256, so a copy of the database does not let anyone in. Deleting the row logs that
    browser out, whatever cookies it kept."""

    __tablename__ = "user_session"

    id: so.Mapped[str] = so.mapped_column(sa.String(64), primary_key=True)
    user_id: so.Mapped[int] = so.mapped_column(
        sa.ForeignKey(User.id, ondelete="CASCADE"), index=True)
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)

    @staticmethod
    def digest(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    @staticmethod
    def oldest_valid() -> datetime:
        """Sessions older than the remember-me cookie's life are over, used or not."""
        return utcnow() - current_app.config["REMEMBER_COOKIE_DURATION"]


class ApiToken(db.Model):
    """A personal access token for the API (app/api/): what `Authorization: Bearer` carries.

    The token is shown once, when it is made; the table keeps only its SHA-256 (a token is
    32 random bytes, so a fast hash is enough), so a copy of the database lets nobody in.
    Deleting the row revokes it. `scope` is "read" or "read write"; a token with no
    `expires_at` never expires. A new password deletes every token of the user.
    """

    __tablename__ = "api_token"

    SCOPES = ("read", "read write")
    PREFIX = "mbt_"  # makes a leaked token easy to recognise (and to scan for)
    # last_used_at is written at most this often: a client polling every second must not
    # cost a database write per poll.
    LAST_USED_RESOLUTION = timedelta(minutes=1)
    # Live tokens a user may hold at once, made on the settings page or by POST /api/tokens:
    # enough for every script and machine one person runs, few enough that the page stays
    # short and a leaked session or password cannot mint tokens without end.
    MAX_LIVE_PER_USER = 50
    # An expired token stays listed on the settings page this long (its owner sees why a
    # script stopped), then the schedule deletes it (purge_expired).
    KEPT_AFTER_EXPIRY = timedelta(days=30)

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    user_id: so.Mapped[int] = so.mapped_column(
        sa.ForeignKey(User.id, ondelete="CASCADE"), index=True)
    name: so.Mapped[str] = so.mapped_column(sa.String(64))
    digest: so.Mapped[str] = so.mapped_column(sa.String(64), unique=True)
    scope: so.Mapped[str] = so.mapped_column(sa.String(32))
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    expires_at: so.Mapped[datetime | None]
    last_used_at: so.Mapped[datetime | None]

    user: so.Mapped[User] = so.relationship()

    def __repr__(self) -> str:
        return f"<ApiToken {self.id} of user {self.user_id}>"

    @staticmethod
    def digest_of(secret: str) -> str:
        return hashlib.sha256(secret.encode()).hexdigest()

    @classmethod
    def issue(cls, user: User, name: str, scope: str,
              expires_in: timedelta | None) -> tuple[ApiToken, str]:
        """A new token of `user` and its secret (to show once); the caller commits."""
        if scope not in cls.SCOPES:
            raise ValueError(f"unknown scope {scope!r}")
        secret = cls.PREFIX + secrets.token_urlsafe(32)
        now = utcnow()
        token = cls(user_id=user.id, name=name, scope=scope, digest=cls.digest_of(secret),
                    created_at=now, expires_at=now + expires_in if expires_in else None)
        db.session.add(token)
        return token, secret

    @classmethod
    def find(cls, secret: str) -> ApiToken | None:
        """The live token whose secret this is (None if unknown, revoked or expired), with
        last_used_at brought up to date (flushed, not committed)."""
        if not secret.startswith(cls.PREFIX) or len(secret) > 128:
            return None
        token = db.session.scalar(sa.select(cls).where(cls.digest == cls.digest_of(secret)))
        now = utcnow()
        if token is None or (token.expires_at is not None and token.expires_at <= now):
            return None
        if token.last_used_at is None or now - token.last_used_at >= cls.LAST_USED_RESOLUTION:
            token.last_used_at = now
        return token

    @classmethod
    def live_count(cls, user: User) -> int:
        """How many of `user`'s tokens can still be used (the cap counts these)."""
        return db.session.scalar(sa.select(sa.func.count(cls.id)).where(
            cls.user_id == user.id,
            sa.or_(cls.expires_at.is_(None), cls.expires_at > utcnow()))) or 0

    @classmethod
    def cap_reached(cls, user: User) -> str | None:
        """Why `user` may not have another token now (translated), or None if they may."""
        if cls.live_count(user) < cls.MAX_LIVE_PER_USER:
            return None
        from flask_babel import _

        return _("You have %(count)d tokens, the most an account may have. Revoke one you no "
                 "longer use to create another.", count=cls.MAX_LIVE_PER_USER)

    @classmethod
    def purge_expired(cls) -> int:
        """Delete every token expired more than KEPT_AFTER_EXPIRY ago; how many went."""
        result = db.session.execute(sa.delete(cls).where(
            cls.expires_at <= utcnow() - cls.KEPT_AFTER_EXPIRY))
        db.session.commit()
        return result.rowcount

    @property
    def scopes(self) -> frozenset[str]:
        return frozenset(self.scope.split())

    def allows(self, scope: str) -> bool:
        return scope in self.scopes


# Built once: every request runs it (building a statement costs more than SQLite running it).
_SESSION_USER = sa.select(User).join(UserSession, UserSession.user_id == User.id).where(
    User.id == sa.bindparam("user_id"), UserSession.id == sa.bindparam("digest"),
    UserSession.created_at >= sa.bindparam("oldest"))


@login.user_loader
def load_user(id: str) -> User | None:
    """The user of a live login session: `id` is "<user id>:<session token>" (User.get_id).
    Cookies from before sessions existed (a bare user id) count as logged out. One query."""
    user_id, _, token = id.partition(":")
    if not token or not user_id.isdigit():
        return None
    user = db.session.scalar(_SESSION_USER, {
        "user_id": int(user_id), "digest": UserSession.digest(token),
        "oldest": UserSession.oldest_valid()})
    if user is not None:
        user.session_token = token
    return user


# A post's body: the compose form allows 280 characters, but an imported post is kept whole
# (a Mastodon or X post may be far longer), so the column has no length of its own. MariaDB's
# TEXT holds 64 KiB; MEDIUMTEXT 16 MiB.
POST_BODY = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")


class PostOrigin:
    """Where an imported post was first written (Post.origin); None for a post written here."""

    MICROBLOG = "microblog"
    MASTODON = "mastodon"
    X = "x"


class Post(db.Model):
    __table_args__ = (
        # The export reads a user's posts in (timestamp, id) order, a batch at a time.
        sa.Index("ix_post_user_timestamp", "user_id", "timestamp", "id"),
        # An imported post's identity on its account (app/imports/identity.py): importing
        # the same archive twice, or an overlapping one, or a retried import, adds each post
        # once, because the database refuses the second. NULL for posts written here: NULLs
        # never collide in a unique constraint (SQLite, PostgreSQL, MariaDB).
        sa.UniqueConstraint("user_id", "origin_key", name="uq_post_user_origin_key"),
    )

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    body: so.Mapped[str] = so.mapped_column(POST_BODY)
    timestamp: so.Mapped[datetime] = so.mapped_column(index=True, default=utcnow)
    user_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey(User.id), index=True)
    language: so.Mapped[str | None] = so.mapped_column(sa.String(5))
    # An imported post's origin (PostOrigin), its id or URL there, and its identity key.
    origin: so.Mapped[str | None] = so.mapped_column(sa.String(16))
    origin_id: so.Mapped[str | None] = so.mapped_column(sa.String(255))
    origin_key: so.Mapped[str | None] = so.mapped_column(sa.String(64))

    author: so.Mapped[User] = so.relationship(back_populates="posts")

    def __repr__(self) -> str:
        return f"<Post {self.body}>"


class Message(db.Model):
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    sender_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey(User.id), index=True)
    recipient_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey(User.id), index=True)
    body: so.Mapped[str] = so.mapped_column(sa.String(280))
    timestamp: so.Mapped[datetime] = so.mapped_column(index=True, default=utcnow)

    author: so.Mapped[User] = so.relationship(
        foreign_keys="Message.sender_id", back_populates="messages_sent")
    recipient: so.Mapped[User] = so.relationship(
        foreign_keys="Message.recipient_id", back_populates="messages_received")


class Notification(db.Model):
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    name: so.Mapped[str] = so.mapped_column(sa.String(128), index=True)
    topic: so.Mapped[str | None] = so.mapped_column(sa.String(64))
    user_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey(User.id), index=True)
    # Double, not Float: MySQL's FLOAT is single precision (minutes of error on a Unix time).
    timestamp: so.Mapped[float] = so.mapped_column(sa.Double, index=True, default=time)
    payload_json: so.Mapped[str] = so.mapped_column(sa.Text)

    user: so.Mapped[User] = so.relationship(back_populates="notifications")

    def get_data(self) -> object:
        return json.loads(str(self.payload_json))

    @staticmethod
    def replace(user_id: int, name: str, data: object, topic: str | None = None) -> None:
        """User.add_notification by the user's id (the task lifecycle has no User loaded):
        one UPDATE of the row there is, or an INSERT when there is none, both on the table
        (no ORM object: a loaded `user.notifications` sees it after the commit, which
        expires it). The caller commits."""
        timestamp = time()
        params = {"p_user_id": user_id, "p_name": name, "p_topic": topic,
                  "p_payload_json": json.dumps(data), "p_timestamp": timestamp}
        db.session.flush()  # a notification added earlier in this transaction: the row to update
        updated = db.session.execute(_replace_statement(topic is not None), params)
        if updated.rowcount == 0:
            db.session.execute(_insert_statement(), params)
        events.queue_event(db.session, user_id, name, data, timestamp)


# Notification.replace's statements, built once with bind parameters: building them for each
# call cost more than running them (every task's start and finish writes a notification). On
# the table, not the mapped class: the ORM's bulk UPDATE machinery cost more than the statement
# (the caller's commit flushes the rest of the session). The parameters are named apart from
# the columns ("p_" + column), which SQLAlchemy would otherwise add to the SET clause.
_NOTIFICATION_VALUES = ("name", "payload_json", "user_id", "topic", "timestamp")


@cache
def _replace_statement(with_topic: bool) -> sa.Update:
    table = Notification.__table__
    topic = table.c.topic == sa.bindparam("p_topic") if with_topic else table.c.topic.is_(None)
    return (sa.update(table)
            .where(table.c.user_id == sa.bindparam("p_user_id"),
                   table.c.name == sa.bindparam("p_name"), topic)
            .values(payload_json=sa.bindparam("p_payload_json"),
                    timestamp=sa.bindparam("p_timestamp")))


@cache
def _insert_statement() -> sa.Insert:
    return sa.insert(Notification.__table__).values(
        {column: sa.bindparam(f"p_{column}") for column in _NOTIFICATION_VALUES})


class TaskStatus:
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"
    ACTIVE = (QUEUED, RUNNING)
    TERMINAL = (FINISHED, FAILED, CANCELLED)


class Task(db.Model):
    """One background job of one user. The row is the source of truth for what the user sees;
    app/jobs/lifecycle.py is the only code that changes its status."""

    __table_args__ = (
        # At most one active task of a name per user, enforced by the database:
        # active_name is the task's name while it is queued/running and NULL after,
        # and NULLs never collide in a unique constraint (SQLite, PostgreSQL, MariaDB).
        sa.UniqueConstraint("user_id", "active_name", name="uq_task_one_active_per_name"),
    )

    id: so.Mapped[str] = so.mapped_column(sa.String(36), primary_key=True)
    name: so.Mapped[str] = so.mapped_column(sa.String(128), index=True)
    description: so.Mapped[str | None] = so.mapped_column(sa.String(128))
    user_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey(User.id))
    complete: so.Mapped[bool] = so.mapped_column(default=False, index=True)
    status: so.Mapped[str] = so.mapped_column(sa.String(16), default=TaskStatus.QUEUED)
    progress: so.Mapped[int] = so.mapped_column(default=0)
    error: so.Mapped[str | None] = so.mapped_column(sa.String(255))
    result_message: so.Mapped[str | None] = so.mapped_column(sa.String(255))
    active_name: so.Mapped[str | None] = so.mapped_column(sa.String(128))
    attempts: so.Mapped[int] = so.mapped_column(default=0)
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    started_at: so.Mapped[datetime | None]
    finished_at: so.Mapped[datetime | None]
    dismissed: so.Mapped[bool] = so.mapped_column(default=False)

    user: so.Mapped[User] = so.relationship(back_populates="tasks")

    def get_rq_job(self) -> rq.job.Job | None:
        try:
            return rq.job.Job.fetch(self.id, connection=current_app.redis)
        except (redis.exceptions.RedisError, rq.exceptions.NoSuchJobError):
            return None

    def get_progress(self) -> int:
        """Progress 0-100. 100 only for a task that really finished: a failed, cancelled
        or vanished job reports the progress it had reached, never 100."""
        if self.status == TaskStatus.FINISHED:
            return 100
        if self.status in TaskStatus.TERMINAL:
            return min(self.progress, 99)
        job = self.get_rq_job()
        if job is not None:
            meta_progress = job.get_meta(refresh=False).get("progress")
            if isinstance(meta_progress, int | float):
                return int(min(max(meta_progress, self.progress), 99))
        return min(self.progress, 99)

    def to_dict(self) -> dict:
        return {
            "task_id": self.id,
            "name": self.name,
            "description": self.description,
            "status": self.status,
            "progress": 100 if self.status == TaskStatus.FINISHED else min(self.progress, 99),
            "error": self.error,
            "message": self.result_message,
        }


# The two statements of every /notifications poll (User.get_tasks_in_progress,
# User.notifications_since), built once.
_TASKS_IN_PROGRESS = sa.select(Task).where(
    Task.user_id == sa.bindparam("user_id"), Task.complete.is_(False)).order_by(Task.created_at)
_NOTIFICATIONS_SINCE = sa.select(Notification).where(
    Notification.user_id == sa.bindparam("user_id"),
    Notification.timestamp > sa.bindparam("since")).order_by(Notification.timestamp.asc())


class Export(db.Model):
    """One archive of a user's posts in the export centre (/exports). Its lifecycle is its
    current Task's (queued, running, finished, failed, cancelled: a retry starts a new task);
    once its file is removed the export is "expired" (by retention) or "replaced" (by a newer
    one beyond EXPORT_KEEP). The id is
    random and goes in URLs. app/exports/centre.py is the only code that changes a row."""

    id: so.Mapped[str] = so.mapped_column(
        sa.String(32), primary_key=True, default=lambda: secrets.token_urlsafe(16))
    user_id: so.Mapped[int] = so.mapped_column(
        sa.ForeignKey(User.id, ondelete="CASCADE"), index=True)
    format: so.Mapped[str] = so.mapped_column(sa.String(16))
    # The current (last) attempt. SET NULL: an operator purging old tasks keeps the export.
    task_id: so.Mapped[str | None] = so.mapped_column(
        sa.ForeignKey(Task.id, ondelete="SET NULL"), index=True)
    # Where the finished file is in storage (app/exports/storage.py); None when there is none.
    storage_key: so.Mapped[str | None] = so.mapped_column(sa.String(255))
    filename: so.Mapped[str | None] = so.mapped_column(sa.String(128))
    posts_count: so.Mapped[int | None]
    size: so.Mapped[int | None] = so.mapped_column(sa.BigInteger)
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow, index=True)
    finished_at: so.Mapped[datetime | None]
    expires_at: so.Mapped[datetime | None]
    expired_at: so.Mapped[datetime | None]

    user: so.Mapped[User] = so.relationship()
    task: so.Mapped[Task | None] = so.relationship()

    EXPIRED = "expired"
    REPLACED = "replaced"

    def __init__(self, **kwargs) -> None:
        # The id at once, not at the first flush: the job is enqueued with it.
        kwargs.setdefault("id", secrets.token_urlsafe(16))
        super().__init__(**kwargs)

    @property
    def status(self) -> str:
        """queued, running, finished, failed, cancelled (its task's), expired or replaced."""
        if self.expired_at is not None:
            # Retention removes a file when it is due; only EXPORT_KEEP removes one earlier.
            if self.expires_at is not None and self.expired_at < self.expires_at:
                return self.REPLACED
            return self.EXPIRED
        if self.task is None:  # its task purged, or a job enqueued by hand without one
            return TaskStatus.FINISHED if self.finished_at is not None else TaskStatus.FAILED
        return self.task.status

    def __repr__(self) -> str:
        return f"<Export {self.id} {self.format} {self.status}>"


class Import(db.Model):
    """One archive a user uploaded to bring posts in (/imports). Two stages, each a Task:
    the preview (the archive read, nothing written to the account) and, once the user
    confirms, the import. Its status (see `status`) follows its current task. The id is
    random and goes in URLs. app/imports/centre.py is the only code that changes a row.

    `position` is how many of the archive's items have been dealt with: it is committed in
    the same transaction as the posts of each batch, with the counts, so a retried import
    (its worker killed) goes on from there, and the counts stay true."""

    PREVIEW = "preview"
    IMPORT = "import"
    # The statuses a page shows, beyond a task's (queued, running, failed, cancelled):
    PREVIEWING = "previewing"
    READY = "ready"           # previewed, waiting for the user to press Import
    IMPORTING = "importing"
    FINISHED = "finished"
    EXPIRED = "expired"       # not confirmed within IMPORT_CONFIRM_MINUTES: its file is gone

    id: so.Mapped[str] = so.mapped_column(sa.String(32), primary_key=True)
    user_id: so.Mapped[int] = so.mapped_column(
        sa.ForeignKey(User.id, ondelete="CASCADE"), index=True)
    stage: so.Mapped[str] = so.mapped_column(sa.String(16), default=PREVIEW)
    # What the archive is (app/imports/readers: microblog-json, mastodon, x, ...), once read.
    kind: so.Mapped[str | None] = so.mapped_column(sa.String(32))
    # The name the browser gave the file: shown, never used as a path.
    filename: so.Mapped[str | None] = so.mapped_column(sa.String(255))
    storage_key: so.Mapped[str | None] = so.mapped_column(sa.String(255))
    size: so.Mapped[int | None] = so.mapped_column(sa.BigInteger)
    # The current task: the preview's, then the import's. SET NULL: purging tasks keeps this.
    task_id: so.Mapped[str | None] = so.mapped_column(
        sa.ForeignKey(Task.id, ondelete="SET NULL"), index=True)
    preview_json: so.Mapped[str | None] = so.mapped_column(sa.Text)
    position: so.Mapped[int] = so.mapped_column(default=0)
    imported: so.Mapped[int] = so.mapped_column(default=0)
    failed: so.Mapped[int] = so.mapped_column(default=0)
    # {"duplicate": 3, "boost": 120, ...}: items skipped, by reason.
    skipped_json: so.Mapped[str | None] = so.mapped_column(sa.Text)
    followed: so.Mapped[int] = so.mapped_column(default=0)
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow, index=True)
    confirm_by: so.Mapped[datetime | None] = so.mapped_column(index=True)
    confirmed_at: so.Mapped[datetime | None]
    finished_at: so.Mapped[datetime | None]
    expired_at: so.Mapped[datetime | None]

    user: so.Mapped[User] = so.relationship()
    task: so.Mapped[Task | None] = so.relationship()

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("id", secrets.token_urlsafe(16))
        super().__init__(**kwargs)

    @property
    def status(self) -> str:
        """previewing, ready, expired, importing, finished, failed or cancelled."""
        if self.expired_at is not None:
            # Dropped by its user while it waited (app/imports/centre.discard), or expired.
            if self.confirm_by is not None and self.expired_at < self.confirm_by:
                return TaskStatus.CANCELLED
            return self.EXPIRED
        if self.stage == self.IMPORT and self.finished_at is not None:
            return self.FINISHED  # every item dealt with (its task may be sending the mail)
        if self.task is None:  # its task purged, or previewed by `flask posts import`
            ready = self.stage == self.PREVIEW and self.confirm_by is not None
            return self.READY if ready else TaskStatus.FAILED
        task_status = self.task.status
        if task_status in TaskStatus.ACTIVE:
            return self.PREVIEWING if self.stage == self.PREVIEW else self.IMPORTING
        if task_status == TaskStatus.FINISHED:
            return self.READY if self.stage == self.PREVIEW else self.FINISHED
        return task_status

    def preview(self) -> dict | None:
        return json.loads(self.preview_json) if self.preview_json else None

    def skipped(self) -> dict[str, int]:
        return json.loads(self.skipped_json) if self.skipped_json else {}

    def __repr__(self) -> str:
        return f"<Import {self.id} {self.kind} {self.status}>"


class ImportProblem(db.Model):
    """One item of an import that was not imported for a reason its user should read item by
    item: a post that failed (malformed), a followed account not found here. Written in the
    transaction of its batch, so a retried import records each once."""

    __tablename__ = "import_problem"
    __table_args__ = (sa.UniqueConstraint("import_id", "outcome", "item",
                                          name="uq_import_problem_item"),)

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    import_id: so.Mapped[str] = so.mapped_column(
        sa.ForeignKey(Import.id, ondelete="CASCADE"), index=True)
    outcome: so.Mapped[str] = so.mapped_column(sa.String(16))  # failed, not_found
    item: so.Mapped[int]  # the item's number in the archive (1-based), or the follow's line
    original_id: so.Mapped[str | None] = so.mapped_column(sa.String(255))
    reason: so.Mapped[str] = so.mapped_column(sa.String(255))


def _more_than_its_last_use(session: so.Session, token: ApiToken) -> bool:
    """A token changed in more than last_used_at (which every minute of use writes)."""
    return any(attr.history.has_changes() for attr in sa.inspect(token).attrs
               if attr.key != "last_used_at")


# What the API's poll cache (app/api/poll_cache.py) may no longer answer from Redis once
# changed: a user's tasks, exports and imports, a token revoked, a user gone
# (app/events/changes.py); a new user, or a user's own columns, change none of it.
changes.watch(Task)
changes.watch(Export)
changes.watch(Import)
changes.watch(ApiToken, changed=_more_than_its_last_use)
changes.watch(User, owner_of=lambda user: user.id, changed=lambda session, user: False)
