#!/bin/bash
# Start Microblog in a container (the Dockerfile's entry point) or on any host, from the
# repository root, with everything configured by the environment (see docs/deployment.md):
#
#   ./boot.sh           web: wait for the database, apply the migrations, exec gunicorn
#                       on $MICROBLOG_HOST:$PORT (the image sets 0.0.0.0; elsewhere the
#                       default is 127.0.0.1) (RUN_MIGRATIONS=0 skips the migrations)
#   ./boot.sh worker    an RQ worker on every queue, mail first, exports last (REDIS_URL); it
#                       waits for Redis and the database, never migrates (the web does)
#   ./boot.sh pool      the pool of non-forking workers for mail and short jobs
#                       (app/jobs/pool.py); it waits as the worker does
#   ./boot.sh cron      RQ's cron scheduler (app/jobs/cron.py: export expiry every 5 minutes);
#                       it only enqueues, so it waits for Redis alone. One per deployment.
#   ./boot.sh CMD ...   anything else, e.g. `./boot.sh flask shell`
#
# `exec` replaces this shell, so the server gets the platform's signals directly: SIGTERM is
# gunicorn's graceful stop and RQ's warm shutdown (the current job finishes first).
set -euo pipefail
cd "$(dirname "$0")"
export FLASK_APP="${FLASK_APP:-microblog.py}"

WAIT_SECONDS="${BOOT_WAIT_SECONDS:-60}"

wait_for() {  # wait_for NAME PYTHON-CHECK: retry the check every 2 s until WAIT_SECONDS
    local name=$1 check=$2 deadline=$((SECONDS + WAIT_SECONDS)) attempt=1
    until python -c "$check"; do
        if ((SECONDS >= deadline)); then
            echo "boot: $name did not answer within ${WAIT_SECONDS}s; giving up" >&2
            exit 1
        fi
        echo "boot: waiting for $name (attempt $attempt)" >&2
        attempt=$((attempt + 1))
        sleep 2
    done
}

# Prints only the driver's first line (host and port, never the password).
DATABASE_CHECK='
import sys
import sqlalchemy as sa
from config import Config
try:
    sa.create_engine(Config.SQLALCHEMY_DATABASE_URI).connect().close()
except Exception as exc:
    reason = str(getattr(exc, "orig", None) or type(exc).__name__).splitlines()[0]
    sys.exit(f"boot: database not reachable: {reason}")
'
REDIS_CHECK='
import sys
from app.redis_connection import redis_from_url
from config import Config
try:
    redis_from_url(Config.REDIS_URL, socket_connect_timeout=3).ping()
except Exception as exc:
    sys.exit(f"boot: Redis not reachable: {type(exc).__name__}")
'

case "${1:-web}" in
web)
    wait_for "the database" "$DATABASE_CHECK"
    if [[ "${RUN_MIGRATIONS:-1}" != 0 ]]; then
        flask db upgrade
    fi
    exec gunicorn -c gunicorn.conf.py microblog:app
    ;;
worker)
    shift
    wait_for "Redis" "$REDIS_CHECK"
    wait_for "the database" "$DATABASE_CHECK"
    exec rq worker -w app.jobs.worker.AppWorker --connection-class app.redis_connection.Redis \
        --with-scheduler --job-monitoring-interval 10 \
        --maintenance-interval 30 "$@" microblog-mail microblog-tasks microblog-bulk
    ;;
pool)
    shift
    wait_for "Redis" "$REDIS_CHECK"
    wait_for "the database" "$DATABASE_CHECK"
    exec python -m app.jobs.pool --num-workers 2 --job-monitoring-interval 10 \
        --maintenance-interval 30 "$@" microblog-mail microblog-tasks
    ;;
cron)
    wait_for "Redis" "$REDIS_CHECK"
    exec rq cron --connection-class app.redis_connection.Redis app.jobs.cron
    ;;
*)
    exec "$@"
    ;;
esac
