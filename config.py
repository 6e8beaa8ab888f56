"""Every setting, read from the environment, with embedded defaults for one machine."""

import os
from datetime import timedelta

basedir = os.path.abspath(os.path.dirname(__file__))
instance_dir = os.environ.get("MICROBLOG_INSTANCE") or os.path.join(basedir, "instance")

DEV_SECRET_KEY = "dev-only-secret-key-change-me-in-production"


def database_url(url: str | None) -> str:
    """The SQLAlchemy URL for DATABASE_URL, accepting the Heroku-style spellings."""
    if not url:
        return "sqlite:///" + os.path.join(instance_dir, "app.db")
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    if url.startswith("mysql://") or url.startswith("mariadb://"):
        url = "mysql+pymysql://" + url.split("://", 1)[1]
    if url.startswith("mysql+pymysql://") and "charset=" not in url:
        url += ("&" if "?" in url else "?") + "charset=utf8mb4"  # emoji in posts
    return url


def engine_options(url: str) -> dict:
    options: dict = {"pool_pre_ping": True}
    if url.startswith("mysql"):
        # InnoDB's default, REPEATABLE READ, keeps reading a transaction's first snapshot: a
        # request or a job polling a Task row would never see what a worker committed since.
        # READ COMMITTED is what PostgreSQL does by default.
        options["isolation_level"] = "READ COMMITTED"
    return options


def embedded_redis_url() -> str:
    return "unix://" + os.path.join(instance_dir, "redis.sock")


def _bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _ints(name: str, default: str) -> list[int]:
    return [int(x) for x in os.environ.get(name, default).split(",") if x.strip()]


class Config:
    SECRET_KEY = os.environ.get("SECRET_KEY") or DEV_SECRET_KEY
    # "production" refuses the development SECRET_KEY; set by Procfile/Docker/systemd.
    MICROBLOG_ENV = os.environ.get("MICROBLOG_ENV", "development")
    SQLALCHEMY_DATABASE_URI = database_url(os.environ.get("DATABASE_URL"))
    SQLALCHEMY_ENGINE_OPTIONS = engine_options(SQLALCHEMY_DATABASE_URI)
    REDIS_URL = os.environ.get("REDIS_URL") or embedded_redis_url()
    INSTANCE_DIR = instance_dir

    MAIL_SERVER = os.environ.get("MAIL_SERVER")
    MAIL_PORT = int(os.environ.get("MAIL_PORT") or 25)
    MAIL_USE_TLS = _bool("MAIL_USE_TLS")
    MAIL_USE_SSL = _bool("MAIL_USE_SSL")
    MAIL_USERNAME = os.environ.get("MAIL_USERNAME")
    MAIL_PASSWORD = os.environ.get("MAIL_PASSWORD")
    MAIL_DEFAULT_SENDER = os.environ.get("MAIL_DEFAULT_SENDER") or "no-reply@microblog.example"
    # Seconds between attempts when the mail server has a transient failure.
    MAIL_RETRY_INTERVALS = _ints("MAIL_RETRY_INTERVALS", "10,60,300")
    # ADMINS: the operator's addresses. Their accounts are admins (app/admin/), and the first
    # is the sender of the app's mail. Only addresses set in the environment make admins: the
    # default sender below is nobody's account, and registration does not verify addresses.
    ADMIN_EMAILS = [a.strip() for a in os.environ.get("ADMINS", "").split(",") if a.strip()]
    ADMINS = ADMIN_EMAILS or ["admin@microblog.example"]

    LOG_TO_STDOUT = _bool("LOG_TO_STDOUT")
    # "text" (the default) or "json": one JSON object per line, for log shippers (app/logs.py).
    LOG_FORMAT = (os.environ.get("LOG_FORMAT") or "text").strip().lower()
    POSTS_PER_PAGE = int(os.environ.get("POSTS_PER_PAGE") or 25)
    LANGUAGES = [x.strip() for x in os.environ.get("LANGUAGES", "en,es,ko").split(",")]

    BOOTSTRAP_SERVE_LOCAL = True
    # Flask-Login's default, named because login sessions (app/models.py UserSession) expire
    # with it too.
    REMEMBER_COOKIE_DURATION = timedelta(days=365)

    # Background jobs. The queues, in the order every worker takes jobs from them: mail and
    # other short jobs a user waits for, then the tutorial's queue (anything not said
    # otherwise), then exports and imports. Each task type names its queue
    # (app/jobs/types.py); docs/operations.md, "Queues", says which goes where and why.
    MAIL_QUEUE = "microblog-mail"
    TASK_QUEUE = "microblog-tasks"
    BULK_QUEUE = "microblog-bulk"
    JOB_QUEUES = (MAIL_QUEUE, TASK_QUEUE, BULK_QUEUE)
    # An export bigger than this is not attached to the email (bytes).
    EXPORT_ATTACHMENT_LIMIT = int(os.environ.get("EXPORT_ATTACHMENT_LIMIT") or 10 * 1024 * 1024)
    EXPORT_BATCH_SIZE = int(os.environ.get("EXPORT_BATCH_SIZE") or 2000)
    # Where export files are written (each under a temporary name until complete); with
    # EXPORT_STORAGE=s3 only the temporary files, before their upload.
    EXPORT_FOLDER = os.environ.get("EXPORT_FOLDER") or os.path.join(instance_dir, "exports")
    # The export centre (app/exports/): days a finished export is kept, finished exports kept
    # per user, seconds between two successful exports of one user (0: no cooldown).
    EXPORT_RETENTION_DAYS = float(os.environ.get("EXPORT_RETENTION_DAYS") or 7)
    EXPORT_KEEP = int(os.environ.get("EXPORT_KEEP") or 3)
    EXPORT_COOLDOWN = int(os.environ.get("EXPORT_COOLDOWN") or 600)
    # Downloads of export files one user may have running at once (app/security/slots.py; 0: no
    # cap).
    EXPORT_DOWNLOADS_PER_USER = int(os.environ.get("EXPORT_DOWNLOADS_PER_USER") or 4)
    # Where finished exports live: "local" (EXPORT_FOLDER, one machine or a shared volume) or
    # "s3" (any S3-compatible object store: AWS S3, MinIO, R2, ...; credentials from the usual
    # AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY variables).
    EXPORT_STORAGE = (os.environ.get("EXPORT_STORAGE") or "local").strip().lower()
    EXPORT_S3_BUCKET = os.environ.get("EXPORT_S3_BUCKET")
    EXPORT_S3_ENDPOINT_URL = os.environ.get("EXPORT_S3_ENDPOINT_URL") or None
    EXPORT_S3_REGION = os.environ.get("EXPORT_S3_REGION") or None
    EXPORT_S3_PREFIX = os.environ.get("EXPORT_S3_PREFIX", "exports/")
    # Downloads redirect to a presigned URL of the store (valid this many seconds) instead of
    # passing through the web process; only when browsers can reach the store's endpoint.
    EXPORT_S3_PRESIGNED_DOWNLOADS = _bool("EXPORT_S3_PRESIGNED_DOWNLOADS")
    EXPORT_S3_PRESIGN_SECONDS = int(os.environ.get("EXPORT_S3_PRESIGN_SECONDS") or 300)
    # Imports (app/imports/): the largest archive accepted (bytes; refused with 413 while it
    # streams in), minutes an uploaded archive waits for its user to press Import before it
    # is deleted, and the limits on a zip archive: members, total uncompressed bytes, and
    # the compression ratio past which a member is taken for a zip bomb.
    IMPORT_MAX_BYTES = int(os.environ.get("IMPORT_MAX_BYTES") or 100 * 1024 * 1024)
    IMPORT_CONFIRM_MINUTES = float(os.environ.get("IMPORT_CONFIRM_MINUTES") or 30)
    IMPORT_MAX_MEMBERS = int(os.environ.get("IMPORT_MAX_MEMBERS") or 10_000)
    IMPORT_MAX_UNCOMPRESSED = int(os.environ.get("IMPORT_MAX_UNCOMPRESSED")
                                  or 4 * 1024 * 1024 * 1024)
    IMPORT_MAX_RATIO = int(os.environ.get("IMPORT_MAX_RATIO") or 200)
    IMPORT_BATCH_SIZE = int(os.environ.get("IMPORT_BATCH_SIZE") or 1000)
    # The address users reach the site at, for links in mail (workers have no request to
    # copy it from). `make run` sets it to its own address.
    PUBLIC_BASE_URL = (os.environ.get("PUBLIC_BASE_URL") or "http://127.0.0.1:5000").rstrip("/")
    # In production a request whose Host is none of PUBLIC_BASE_URL's, these (comma-separated;
    # ".example.org" takes its subdomains) or localhost/127.0.0.1 is refused with 400 (app/urls.py).
    EXTRA_TRUSTED_HOSTS = [h.strip() for h in os.environ.get("TRUSTED_HOSTS", "").split(",")
                           if h.strip()]
    # A worker that dies mid-job stops heartbeating; its job counts as abandoned
    # this many seconds after the last heartbeat (RQ adds the monitoring interval).
    # Progress is pushed to the page as it is written (app/events/); each write is also a
    # database commit, so at most one every this many seconds (and one per whole percent).
    TASK_PROGRESS_INTERVAL = float(os.environ.get("TASK_PROGRESS_INTERVAL") or 0.25)
    TASK_HEARTBEAT_GRACE = int(os.environ.get("TASK_HEARTBEAT_GRACE") or 30)
    # A cancelled task stops itself at its next progress report; one still running this many
    # seconds later has its work horse killed by its worker (app/jobs/lifecycle.py, cancel).
    TASK_CANCEL_GRACE = float(os.environ.get("TASK_CANCEL_GRACE") or 30)
    # The CPU priority of jobs under AppWorker (app/jobs/priority.py): "idle" (jobs get only
    # the CPU nothing else wants: pages before jobs), "batch" (nice 19) or "normal". Idle by
    # default: on a quiet 2-core host, two exports running left the pages' p99 within 1.2 x
    # of idle, against about 3 x at normal (docs/performance.md §3). On a machine whose other
    # programs keep the CPU busy, exports then wait for them too: set normal there.
    WORKER_CPU_PRIORITY = (os.environ.get("WORKER_CPU_PRIORITY") or "idle").strip().lower()
    # The live event stream (GET /events, app/live/): a comment this often keeps proxies from
    # closing an idle stream; a stream ends after EVENTS_MAX_AGE seconds and the browser
    # reconnects at once, resuming where it was (so a long-open tab re-checks its login).
    EVENTS_HEARTBEAT = float(os.environ.get("EVENTS_HEARTBEAT") or 15)
    EVENTS_MAX_AGE = float(os.environ.get("EVENTS_MAX_AGE") or 600)
    # Caps on open /events streams (app/live/caps.py), 0 for none: per user and per client
    # address across every web process (counted in Redis), and per web process. The newest
    # past a cap is refused and its page polls instead. Per process: half of gunicorn's
    # worker_connections unless set, so that streams never hold every connection pages need.
    # Per user: a few tabs, plus the streams of pages just left, which count until the server
    # notices they closed (at their next keep-alive, EVENTS_HEARTBEAT).
    EVENTS_MAX_PER_USER = int(os.environ.get("EVENTS_MAX_PER_USER") or 10)
    EVENTS_MAX_PER_ADDRESS = int(os.environ.get("EVENTS_MAX_PER_ADDRESS") or 100)
    EVENTS_MAX_PER_PROCESS = int(os.environ.get("EVENTS_MAX_PER_PROCESS")
                                 or int(os.environ.get("GUNICORN_WORKER_CONNECTIONS") or 1000) // 2)

    # Request bodies (bytes), refused with 413 before they are read (app/security/body_limits.py): a
    # whole body, one multipart field held in memory, the number of multipart fields. The
    # largest form (a 280-character post) is a few KB; an upload route sets its own limit.
    MAX_CONTENT_LENGTH = int(os.environ.get("MAX_CONTENT_LENGTH") or 1024 * 1024)
    MAX_FORM_MEMORY_SIZE = int(os.environ.get("MAX_FORM_MEMORY_SIZE") or 64 * 1024)
    MAX_FORM_PARTS = int(os.environ.get("MAX_FORM_PARTS") or 100)

    # Rate limits (app/security/limits.py), counted in Redis: "N per second|minute|hour|day",
    # several separated by ";". Login counts failed attempts only: per address, per account and
    # address, and per account (which refuses only addresses that failed for it).
    RATELIMIT_ENABLED = _bool("RATELIMIT_ENABLED", True)
    RATELIMIT_LOGIN = os.environ.get("RATELIMIT_LOGIN") or "10 per minute;50 per hour"
    RATELIMIT_REGISTER = os.environ.get("RATELIMIT_REGISTER") or "10 per minute;50 per hour"
    RATELIMIT_RESET_PASSWORD = (os.environ.get("RATELIMIT_RESET_PASSWORD")
                                or "5 per minute;20 per hour")
    RATELIMIT_SEND_MESSAGE = (os.environ.get("RATELIMIT_SEND_MESSAGE")
                              or "20 per minute;200 per hour")
    RATELIMIT_EXPORT = os.environ.get("RATELIMIT_EXPORT") or "5 per minute;20 per hour"
    RATELIMIT_IMPORT = os.environ.get("RATELIMIT_IMPORT") or "5 per minute;20 per hour"
    RATELIMIT_API = os.environ.get("RATELIMIT_API") or "300 per minute"
    RATELIMIT_API_TOKENS = os.environ.get("RATELIMIT_API_TOKENS") or "10 per minute;50 per day"
    # Reverse proxies in front of the web processes that append to X-Forwarded-For (1 behind
    # the nginx of deployment/): the client address the per-address limits count.
    TRUSTED_PROXY_COUNT = int(os.environ.get("TRUSTED_PROXY_COUNT") or 0)

    # GET /metrics (app/monitoring): readable from these addresses or networks (the client
    # address as TRUSTED_PROXY_COUNT defines it), with this bearer token, or by an admin.
    METRICS_ALLOW = os.environ.get("METRICS_ALLOW", "127.0.0.1,::1")
    METRICS_TOKEN = os.environ.get("METRICS_TOKEN") or None
