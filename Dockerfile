# Microblog: one image for the web app and the RQ workers (see docs/deployment.md).
#   docker build -t microblog .
#   docker run ... microblog            # web: waits for the database, migrates, gunicorn on :5000
#   docker run ... microblog worker     # an RQ worker on every queue, mail first
#   docker run ... microblog pool       # the pool of non-forking workers for mail and short jobs
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# A numeric USER below, so that platforms enforcing "run as non-root" can check it.
RUN useradd --create-home --uid 10001 --user-group --shell /usr/sbin/nologin microblog

WORKDIR /app

# The dependencies listed in pyproject.toml, in their own layer: it is rebuilt only when
# pyproject.toml changes. Wheels exist for all of them (psycopg[binary]), so no compiler.
COPY pyproject.toml ./
RUN python -m venv "$VIRTUAL_ENV" \
    && python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The application runs from /app (as `gunicorn microblog:app` expects); the code stays owned
# by root, only instance/ (outbox, export files) is writable by the app's user.
COPY . .
RUN chmod 0755 boot.sh \
    && flask --app microblog translate compile \
    && rm -rf instance && mkdir instance && chown microblog:microblog instance

USER 10001:10001

# MICROBLOG_HOST: gunicorn listens on every interface of the container, so that a published
# port reaches it (outside a container it listens on 127.0.0.1 unless told otherwise).
ENV FLASK_APP=microblog.py \
    MICROBLOG_ENV=production \
    LOG_TO_STDOUT=1 \
    MICROBLOG_HOST=0.0.0.0 \
    PORT=5000
EXPOSE 5000

# The web's health endpoint: 200 when the database and Redis answer, 503 (exit 1) otherwise.
# Python's urllib, since the slim image has no curl. A worker container replaces this check
# (compose.yaml) with one that looks for its own registration in Redis.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '5000'), timeout=4)"]

ENTRYPOINT ["./boot.sh"]
CMD ["web"]
