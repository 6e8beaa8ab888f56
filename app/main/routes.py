import math
from datetime import timedelta

import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import (
    Response,
    abort,
    current_app,
    flash,
    g,
    has_request_context,
    jsonify,
    redirect,
    render_template,
    request,
    send_from_directory,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_babel import _, get_locale
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_required

from app import db
from app.forms import EmptyForm
from app.jobs import failures, lifecycle, reconcile
from app.main import avatars, bp
from app.main.forms import EditProfileForm, MessageForm, PostForm
from app.models import Message, Post, Task, TaskStatus, User, utcnow
from app.pagination import paginate
from app.security.limits import by_user, configured, limiter


@bp.before_app_request
def before_request() -> None:
    if current_user.is_authenticated:
        now = utcnow()
        # One write a minute at most, not one per request.
        if current_user.last_seen is None or now - current_user.last_seen > timedelta(minutes=1):
            current_user.last_seen = now
            db.session.commit()
    g.locale = str(get_locale())


@bp.app_context_processor
def inject_page_globals() -> dict[str, object]:
    from app.email import outbox_pages_enabled

    return {"outbox_enabled": outbox_pages_enabled(), "task_alerts": _task_alerts,
            "task_outcomes": TASK_OUTCOMES, "task_outcomes_for_script": _outcomes_for_script,
            "reason_for_reader": failures.reason_for_reader}


# What a task's alert says once the task has ended, by kind of task, and where its result is
# (lazy strings: translated when shown). A kind not listed keeps its description.
TASK_OUTCOMES: dict[str, dict[str, object]] = {
    "export_posts": {
        TaskStatus.FINISHED: _l("Your export is ready."),
        TaskStatus.FAILED: _l("Your export failed."),
        TaskStatus.CANCELLED: _l("Your export was cancelled."),
        "link": _l("Go to your exports"),
        "endpoint": "exports.index",
    },
    "preview_import": {
        TaskStatus.FINISHED: _l("Your archive has been read: see what it holds, then import it."),
        TaskStatus.FAILED: _l("Your archive could not be read."),
        TaskStatus.CANCELLED: _l("Reading your archive was cancelled."),
        "link": _l("Go to your imports"),
        "endpoint": "imports.index",
    },
    "import_posts": {
        TaskStatus.FINISHED: _l("Your import is done."),
        TaskStatus.FAILED: _l("Your import failed."),
        TaskStatus.CANCELLED: _l("Your import was cancelled."),
        "link": _l("Go to your imports"),
        "endpoint": "imports.index",
    },
}


def _outcomes_for_script() -> dict[str, dict[str, str]]:
    """TASK_OUTCOMES as the page's script reads them (data-outcomes): texts and URLs."""
    return {name: {key: url_for(value) if key == "endpoint" else str(value)
                   for key, value in outcome.items()}
            for name, outcome in TASK_OUTCOMES.items()}


def _task_alerts() -> list[Task]:
    """The alerts base.html shows. Those of ended tasks are shown this once: after the
    response they are marked seen (mark_task_alerts_seen)."""
    if not has_request_context() or not current_user or not current_user.is_authenticated:
        return []
    tasks = current_user.visible_tasks()
    g.ended_task_alerts = [(t.name, t.created_at) for t in tasks if t.complete]
    return tasks


@bp.after_app_request
def mark_task_alerts_seen(response: Response) -> Response:
    shown = g.pop("ended_task_alerts", None)
    if shown and response.status_code < 400 and current_user.is_authenticated:
        lifecycle.mark_seen(current_user.id, shown)
    return response


def _with_authors(query: sa.Select, model: type[Post] | type[Message] = Post) -> sa.Select:
    """A list of posts (or messages) that _post.html shows with their authors: the authors
    come in the same query, not one SELECT per author while the page renders (N+1)."""
    return query.options(so.joinedload(model.author, innerjoin=True))


@bp.route("/", methods=["GET", "POST"])
@bp.route("/index", methods=["GET", "POST"])
@login_required
def index() -> ResponseReturnValue:
    form = PostForm()
    if form.validate_on_submit():
        post = Post(body=form.post.data.strip(), author=current_user,
                    language=g.locale[:5] if g.locale else None)
        db.session.add(post)
        db.session.commit()
        flash(_("Your post is now live!"), "success")
        return redirect(url_for("main.index"))
    posts = paginate(_with_authors(current_user.following_posts()))
    next_url = url_for("main.index", page=posts.next_num) if posts.has_next else None
    prev_url = url_for("main.index", page=posts.prev_num) if posts.has_prev else None
    return render_template("index.html", title=_("Home"), form=form, posts=posts.items,
                           next_url=next_url, prev_url=prev_url)


@bp.route("/explore")
@login_required
def explore() -> str:
    posts = paginate(_with_authors(
        sa.select(Post).order_by(Post.timestamp.desc(), Post.id.desc())))
    next_url = url_for("main.explore", page=posts.next_num) if posts.has_next else None
    prev_url = url_for("main.explore", page=posts.prev_num) if posts.has_prev else None
    return render_template("index.html", title=_("Explore"), posts=posts.items,
                           next_url=next_url, prev_url=prev_url)


@bp.route("/user/<username>")
@login_required
def user(username: str) -> str:
    user = db.first_or_404(sa.select(User).where(User.username == username))
    # Every post's author is `user`, already loaded: _post.html finds it without a query.
    posts = paginate(user.posts.select().order_by(Post.timestamp.desc(), Post.id.desc()))
    next_url = (url_for("main.user", username=user.username, page=posts.next_num)
                if posts.has_next else None)
    prev_url = (url_for("main.user", username=user.username, page=posts.prev_num)
                if posts.has_prev else None)
    return render_template("user.html", user=user, posts=posts.items, next_url=next_url,
                           prev_url=prev_url, form=EmptyForm(), title=user.username)


@bp.route("/user/<username>/popup")
@login_required
def user_popup(username: str) -> str:
    user = db.first_or_404(sa.select(User).where(User.username == username))
    return render_template("user_popup.html", user=user, form=EmptyForm())


@bp.route("/edit_profile", methods=["GET", "POST"])
@login_required
def edit_profile() -> ResponseReturnValue:
    form = EditProfileForm(current_user.username)
    if form.validate_on_submit():
        current_user.username = form.username.data
        current_user.about_me = form.about_me.data
        db.session.commit()
        flash(_("Your changes have been saved."), "success")
        return redirect(url_for("main.edit_profile"))
    elif request.method == "GET":
        form.username.data = current_user.username
        form.about_me.data = current_user.about_me
    return render_template("edit_profile.html", title=_("Edit Profile"), form=form)


@bp.route("/follow/<username>", methods=["POST"])
@login_required
def follow(username: str) -> ResponseReturnValue:
    form = EmptyForm()
    if not form.validate_on_submit():
        abort(400)
    user = db.session.scalar(sa.select(User).where(User.username == username))
    if user is None:
        flash(_("User %(username)s not found.", username=username), "danger")
        return redirect(url_for("main.index"))
    if user == current_user:
        flash(_("You cannot follow yourself!"), "warning")
        return redirect(url_for("main.user", username=username))
    current_user.follow(user)
    db.session.commit()
    flash(_("You are following %(username)s!", username=username), "success")
    return redirect(url_for("main.user", username=username))


@bp.route("/unfollow/<username>", methods=["POST"])
@login_required
def unfollow(username: str) -> ResponseReturnValue:
    form = EmptyForm()
    if not form.validate_on_submit():
        abort(400)
    user = db.session.scalar(sa.select(User).where(User.username == username))
    if user is None:
        flash(_("User %(username)s not found.", username=username), "danger")
        return redirect(url_for("main.index"))
    if user == current_user:
        flash(_("You cannot unfollow yourself!"), "warning")
        return redirect(url_for("main.user", username=username))
    current_user.unfollow(user)
    db.session.commit()
    flash(_("You are not following %(username)s.", username=username), "info")
    return redirect(url_for("main.user", username=username))


@bp.route("/send_message/<recipient>", methods=["GET", "POST"])
@login_required
@limiter.limit(configured("RATELIMIT_SEND_MESSAGE"), methods=["POST"], key_func=by_user)
def send_message(recipient: str) -> ResponseReturnValue:
    user = db.first_or_404(sa.select(User).where(User.username == recipient))
    form = MessageForm()
    if form.validate_on_submit():
        msg = Message(author=current_user, recipient=user, body=form.message.data.strip())
        db.session.add(msg)
        db.session.flush()  # so that the count below includes the new message
        user.add_notification("unread_message_count", user.unread_message_count())
        db.session.commit()
        flash(_("Your message has been sent."), "success")
        return redirect(url_for("main.user", username=recipient))
    return render_template("send_message.html", title=_("Send Message"), form=form,
                           recipient=user)


@bp.route("/messages")
@login_required
def messages() -> str:
    current_user.last_message_read_time = utcnow()
    current_user.add_notification("unread_message_count", 0)
    db.session.commit()
    query = current_user.messages_received.select().order_by(
        Message.timestamp.desc(), Message.id.desc())
    msgs = paginate(_with_authors(query, Message))
    next_url = url_for("main.messages", page=msgs.next_num) if msgs.has_next else None
    prev_url = url_for("main.messages", page=msgs.prev_num) if msgs.has_prev else None
    return render_template("messages.html", title=_("Messages"), messages=msgs.items,
                           next_url=next_url, prev_url=prev_url)


@bp.route("/notifications")
@login_required
def notifications() -> Response:
    """The JSON the page polls: [{name, data, timestamp}] newer than `since`."""
    since = request.args.get("since", 0.0, type=float)
    if not math.isfinite(since):  # MariaDB's driver cannot send nan/inf: a 500 there
        since = 0.0
    reconcile.reconcile_user_tasks(current_user)  # one query when nothing is in progress
    return jsonify([{"name": n.name, "data": failures.notification_for_reader(n.name, n.get_data()),
                     "timestamp": n.timestamp} for n in current_user.notifications_since(since)])


def _own_task_or_404(task_id: str) -> Task:
    task = db.session.get(Task, task_id)
    if task is None or task.user_id != current_user.id:
        abort(404)
    return task


@bp.route("/tasks/<task_id>")
@login_required
def task_status(task_id: str) -> Response:
    task = reconcile.reconcile(_own_task_or_404(task_id))
    return jsonify(failures.task_for_reader(task.to_dict()))


@bp.route("/tasks/<task_id>/dismiss", methods=["POST"])
@login_required
def dismiss_task(task_id: str) -> ResponseReturnValue:
    form = EmptyForm()
    if not form.validate_on_submit():
        abort(400)
    task = _own_task_or_404(task_id)
    if task.complete:
        lifecycle.dismiss(task)
    if request.accept_mimetypes.best == "application/json":
        return jsonify(failures.task_for_reader(task.to_dict()))
    return redirect(request.referrer or url_for("main.index"))


@bp.route("/avatar/<digest>.svg")
def avatar(digest: str) -> Response:
    size = max(16, min(request.args.get("size", 80, type=int), 512))
    if len(digest) != 32 or any(c not in "0123456789abcdef" for c in digest):
        abort(404)
    response = Response(avatars.identicon_svg(digest, size), mimetype="image/svg+xml")
    response.cache_control.public = True
    response.cache_control.max_age = 86400
    return response


@bp.route("/favicon.ico")
def favicon() -> Response:
    """Browsers ask for /favicon.ico on a site's first page whatever the page links (base.html
    links it and the SVG in static/)."""
    return send_from_directory(current_app.static_folder, "favicon.ico",
                               mimetype="image/vnd.microsoft.icon", max_age=86400)


@bp.route("/health")
def health() -> tuple[Response, int]:
    """Database, Redis and worker status for load balancers; 503 when a dependency is down.
    Reports no URLs or credentials."""
    import rq

    status = {"database": "ok", "redis": "ok", "workers": 0}
    try:
        db.session.execute(sa.text("SELECT 1"))
    except Exception:
        db.session.rollback()
        status["database"] = "unavailable"
    try:
        current_app.redis.ping()
        status["workers"] = rq.Worker.count(queue=current_app.task_queue)
    except Exception:
        status["redis"] = "unavailable"
    healthy = status["database"] == "ok" and status["redis"] == "ok"
    status["status"] = "ok" if healthy else "unavailable"
    return jsonify(status), 200 if healthy else 503
