"""The application factory: extensions, app.redis, app.task_queue (and app.job_queues) and the
blueprints."""

from app.jobs.process import collector_paused

# No cyclic garbage collection while Flask, SQLAlchemy and the other extensions are imported
# (the web's and a worker's work horse's first cost: app/jobs/process.py says why).
with collector_paused():
    import logging
    import os
    import sys
    from logging.handlers import RotatingFileHandler

    import rq
    from flask import Flask, request
    from flask_babel import Babel
    from flask_babel import lazy_gettext as _l
    from flask_login import LoginManager
    from flask_mail import Mail
    from flask_sqlalchemy import SQLAlchemy
    from sqlalchemy import MetaData

    from config import DEV_SECRET_KEY, Config

# Stable constraint names, so that migrations behave alike on SQLite, PostgreSQL and MariaDB.
naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def get_locale():
    from flask import current_app, has_request_context

    if not has_request_context():
        return None  # a worker: the default locale (or one set with force_locale)
    return request.accept_languages.best_match(current_app.config["LANGUAGES"])


db = SQLAlchemy(metadata=MetaData(naming_convention=naming_convention))
login = LoginManager()
login.login_view = "auth.login"
login.login_message = _l("Please log in to access this page.")
mail = Mail()
babel = Babel()


def __getattr__(name: str):
    """`app.bootstrap` and `app.csrf`, the web's own extensions, made on first use: a
    worker's app has neither, and their imports (Flask-WTF, Flask-Bootstrap) cost a plain
    work horse ~10 ms."""
    if name == "bootstrap":
        from flask_bootstrap import Bootstrap5
        extension = Bootstrap5()
    elif name == "csrf":
        from flask_wtf.csrf import CSRFProtect
        extension = CSRFProtect()
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = extension
    return extension


def create_app(config_class=Config, commands: bool = True, web: bool = True) -> Flask:
    """The app. A worker process's app (app/jobs/bootstrap.py) is made with both false, since it
    serves no request and runs no command: plain `rq worker` builds it in every job's work
    horse, so whatever it leaves out is time saved on every job. Without `commands`, no
    Flask-Migrate (whose import of Alembic cost a quarter of a second); without `web`, no
    blueprints (their URL rules and their imports: Flask-Limiter, WTForms, the views) and none
    of the extensions that only act on a request (CSRF, rate limits, security headers,
    Bootstrap). A job builds no URL with url_for: the links in its mail come from
    PUBLIC_BASE_URL (app/urls.py)."""
    app = Flask(__name__, instance_path=config_class.INSTANCE_DIR)
    app.config.from_object(config_class)
    if app.config["MICROBLOG_ENV"] == "production" and app.config["SECRET_KEY"] == DEV_SECRET_KEY:
        raise RuntimeError("SECRET_KEY must be set in production (MICROBLOG_ENV=production).")
    os.makedirs(app.instance_path, exist_ok=True)

    db.init_app(app)
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        with app.app_context():
            _tune_sqlite(db.engine)
    login.init_app(app)
    mail.init_app(app)
    babel.init_app(app, locale_selector=get_locale)
    from app.redis_connection import redis_from_url

    app.redis = redis_from_url(
        app.config["REDIS_URL"], socket_connect_timeout=2, socket_timeout=10,
        health_check_interval=30,
    )
    # Every queue by name, in priority order; app.task_queue is the tutorial's (the default).
    app.job_queues = {name: rq.Queue(name, connection=app.redis)
                      for name in app.config["JOB_QUEUES"]}
    app.task_queue = app.job_queues[app.config["TASK_QUEUE"]]
    from app.jobs import lifecycle

    app.extensions["launch_task"] = lifecycle.launch  # User.launch_task (see there)
    if web:
        _init_web(app)
    if commands:
        from flask_migrate import Migrate

        from app import cli

        Migrate(app, db, render_as_batch=True)  # `flask db ...`
        cli.register(app)

    from app import template_filters, urls

    template_filters.register(app)
    urls.register(app)  # public_url() in templates; TRUSTED_HOSTS in production
    _configure_logging(app)
    return app


def _init_web(app: Flask) -> None:
    """What only serving requests needs: the request-side extensions and the blueprints."""
    from app import bootstrap, csrf, security
    from app.security import body_limits
    from app.security.limits import init_limiter

    body_limits.init_app(app)  # first: every before-request function after it may read the body
    bootstrap.init_app(app)
    csrf.init_app(app)

    security.init_app(app)
    init_limiter(app)  # after the config is final: it reads REDIS_URL and RATELIMIT_*

    from app.errors import bp as errors_bp

    app.register_blueprint(errors_bp)

    from app.auth import bp as auth_bp

    app.register_blueprint(auth_bp, url_prefix="/auth")

    from app.main import bp as main_bp

    app.register_blueprint(main_bp)

    from app.exports.routes import bp as exports_bp

    app.register_blueprint(exports_bp)

    from app.imports.routes import bp as imports_bp

    app.register_blueprint(imports_bp)

    from app.live import bp as live_bp

    app.register_blueprint(live_bp)

    from app.outbox import bp as outbox_bp

    app.register_blueprint(outbox_bp)

    from app.settings import bp as settings_bp

    app.register_blueprint(settings_bp)

    from app.monitoring import bp as monitoring_bp

    app.register_blueprint(monitoring_bp)

    from app.admin import bp as admin_bp

    app.register_blueprint(admin_bp)

    from app.api import spec

    spec.init_app(app)  # the token API under /api/ (flask-smorest: its blueprints and document)
    from app.api.poll_cache import PollCache

    app.wsgi_app = PollCache(app)  # unchanged API polls: a 304 from Redis, before Flask


def _tune_sqlite(engine) -> None:
    """The embedded database serves a web server and workers at once: write-ahead logging lets
    readers go on while a worker commits, and synchronous=NORMAL makes a commit cheap (safe in
    WAL mode; a power cut may lose the last commits, never corrupt the file)."""
    from sqlalchemy import event

    wal = False  # the journal mode is the file's, kept once set: one connection sets it

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, connection_record):
        nonlocal wal
        cursor = dbapi_connection.cursor()
        if not wal:  # a work horse inherits this from its worker: it costs ~1 ms a connection
            cursor.execute("PRAGMA journal_mode=WAL")
            wal = True
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.close()


def _configure_logging(app: Flask) -> None:
    from app import logs

    # On the logger, not only our handler: Flask's own (stderr) gets its lines too.
    app.logger.addFilter(logs.RedactSecretsFilter())
    if app.debug or app.testing:
        return
    if app.config["LOG_TO_STDOUT"]:
        handler: logging.Handler = logging.StreamHandler(sys.stdout)
    else:
        os.makedirs(os.path.join(app.instance_path, "logs"), exist_ok=True)
        handler = RotatingFileHandler(
            os.path.join(app.instance_path, "logs", "microblog.log"), maxBytes=1024 * 1024,
            backupCount=10,
        )
    logs.prepare_handler(handler, app.config["LOG_FORMAT"])  # LOG_FORMAT, job ids on job lines
    if app.config["LOG_FORMAT"] == "json":
        # Flask's own handler copies every line to stderr in its text format.
        from flask.logging import default_handler

        app.logger.removeHandler(default_handler)
    handler.setLevel(logging.INFO)
    app.logger.addHandler(handler)
    app.logger.setLevel(logging.INFO)
    # This handler is the app's only one: a worker with LOG_FORMAT=json has another at the
    # root (app/logs.py) that would print each line twice.
    app.logger.propagate = False

