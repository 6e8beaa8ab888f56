"""gunicorn settings shared by `make run`, the Procfile, Docker and systemd (env overrides)."""

import multiprocessing
import os
import sys

from gunicorn.glogging import Logger

# MICROBLOG_HOST: the address to listen on. Loopback unless told otherwise, so that `make run`
# on a laptop is not reachable from the network; the Procfile (a PaaS router) and the Docker
# image (a published port) set 0.0.0.0. GUNICORN_BIND, when set, replaces host and port.
host = os.environ.get("MICROBLOG_HOST") or "127.0.0.1"
if ":" in host and not host.startswith("["):
    host = f"[{host}]"  # an IPv6 address
bind = os.environ.get("GUNICORN_BIND") or f"{host}:{os.environ.get('PORT', '5000')}"
workers = int(os.environ.get("WEB_CONCURRENCY") or min(4, multiprocessing.cpu_count() * 2))
# gevent: each request is a greenlet, so an open /events stream (live push) costs a few KB
# rather than a thread, and a thousand of them never block a page. Every library on the
# request path cooperates: redis-py and PyMySQL through gevent's patched sockets, psycopg
# (3.1.14+) by itself; SQLite calls are short and local. Measured against gthread
# (docs/performance.md §7, "gevent or gthread"): keep-alive connections are spread evenly
# over the workers already (reuse_port changed nothing) and the CPU a request is 0-25 %
# more; only on a CPU-starved machine did gthread serve up to 2-3x more, the kernel giving
# its often-sleeping threads more CPU than gevent processes that seldom sleep.
worker_class = os.environ.get("GUNICORN_WORKER_CLASS") or "gevent"
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS") or 1000)
threads = int(os.environ.get("GUNICORN_THREADS") or 2)  # with GUNICORN_WORKER_CLASS=gthread
timeout = 30
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-") or None
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")


class AccessLogWithoutSecrets(Logger):
    """The access log with the secret of a reset link (in its path, and in the Referer of the
    requests its page makes) replaced by `<token>` (app/logs.py redact_url)."""

    def atoms(self, resp, req, environ, request_time):
        # Imported here, in a worker that has loaded the app: importing the app package in
        # the master, before a gevent worker patches the standard library, would break it.
        from app.logs import redact_url

        atoms = super().atoms(resp, req, environ, request_time)
        return {key: redact_url(value) if isinstance(value, str) else value
                for key, value in atoms.items()}


logger_class = AccessLogWithoutSecrets
# gunicorn 23+ opens a control socket under $HOME by default; several gunicorns on one
# machine (tests, benchmarks, make run) would share it.
control_socket_disable = True


def post_worker_init(worker):
    # Open /events streams end as soon as the worker is told to stop (app/live/hub.py).
    from app.live.hub import end_streams_when_stopped

    end_streams_when_stopped(worker)


def post_request(worker, req, environ, resp):
    # gevent: a keep-alive connection whose next request has already arrived would be read
    # and served at once, without yielding, while the process's other connections wait;
    # yielding after each response takes them in turn (p99 at 16 connections about 3x lower
    # on /notifications, docs/performance.md §7 "gevent or gthread"). No-op on gthread/sync.
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("socket"):
        import gevent

        gevent.sleep(0)
