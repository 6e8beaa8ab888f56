"""API polls: what a program's status poll costs, and what many of them do to the pages.

gunicorn as `make run` starts it (gunicorn.conf.py), a bounded closed-loop load from a Python
client (threads, one keep-alive connection each), in `--repeat` rounds, interleaved:

  poll costs: GET /api/exports/<id> with the ETag of the last answer (304, no body) and
              without it (200, the export as JSON), for a finished export (the row is all
              there is to read) and for one in progress (queued, its job in Redis: the poll
              also looks at the job, as it does while a job runs); against the HTML export
              page (/exports) of the same user. A 304 is answered by the poll cache
              (app/api/poll_cache.py) from Redis; `..._app` kinds are the same 304 answered
              by the app (a query string, which the cache leaves to the app). Requests per
              second, p50 and p99 latency, and the web processes' CPU per request
              (schedstat): target, a 304 costs less than a tenth of the page.
  pollers:    `--clients` API clients (100, then 1,000), each polling its own export in
              progress once a second with If-None-Match (an asyncio client in a process of
              its own, one keep-alive connection each), and the home page's latency measured
              with none of them and then with all of them polling: target, with 1,000, the
              page's p99 at most 1.5 x idle. The exports are queued and stay so (no worker
              runs in this phase), so every poll after the first is a 304, as for a running
              export between two progress reports. The clients' process runs at the lowest
              CPU priority (nice 19): real clients are on other machines, and here they share
              the web's two cores.

    python -m bench api [--duration 5] [--connections 4] [--repeat 3] [--clients 100,1000]
                        [--quick] [--database ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from bench.harness import (
    ROOT,
    Services,
    WebServer,
    add_posts,
    analyze,
    create_user,
    create_users,
    emit,
    fmt,
    login,
    number,
    raise_open_files,
    run_load,
    say,
    summary,
    table,
    wait_until,
    web_schedstat,
)

NAME = "api"
TARGET_POLL_RATIO = 0.1  # a 304 poll's CPU over the export page's
TARGET_PAGE_P99 = 1.5    # the home page's p99 with the pollers over idle

# The pollers: one process, asyncio, one keep-alive connection per client; each client polls
# its export once a second with the ETag of its last 200. It prints "ready" once every client
# has had an answer, then polls until its stdin closes, then prints its figures as JSON.
POLLERS = r"""
import asyncio, json, os, random, socket, sys, time

# The clients stand for other machines: the web comes first on these cores (not in --quick,
# whose figures mean nothing, where a busy machine would starve them of CPU for seconds).
os.nice(int(sys.argv[2]))
port, clients = int(sys.argv[1]), json.loads(sys.stdin.readline())
latencies, statuses, errors, answered = [], {}, [0], [0]
error_kinds = {}
stop = asyncio.Event()

async def poll_forever(path, token):
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    reader = writer = None
    first = True
    await asyncio.sleep(random.random())  # clients start spread over a second
    while not stop.is_set():
        started = time.perf_counter()
        for attempt in (1, 2):
            fresh = writer is None
            head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}\r\n".encode()
            try:
                if fresh:
                    # Connected and sent in one step: gunicorn closes a connection whose
                    # request has not come within its keepalive (2 s), and a client starved of
                    # CPU between the two (these run at nice 19) would lose every poll.
                    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                    sock.sendall(request)
                    sock.setblocking(False)
                    reader, writer = await asyncio.open_connection(sock=sock)
                else:
                    writer.write(request)
                raw = await reader.readuntil(b"\r\n\r\n")
                lines = raw.decode("latin-1").split("\r\n")
                status = int(lines[0].split(" ", 2)[1])
                fields = {k.lower(): v.strip()
                          for k, _, v in (line.partition(":") for line in lines[1:] if line)}
                await reader.readexactly(int(fields.get("content-length", 0)))
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                writer = None
                # A kept-alive connection the server closed while this client waited (gunicorn
                # keeps an idle one 2 s; a client starved of CPU waits longer): sent again on a
                # new one, as HTTP clients do. A new connection that fails is an error.
                if fresh or attempt == 2:
                    errors[0] += 1
                    kind = type(exc).__name__
                    error_kinds[kind] = error_kinds.get(kind, 0) + 1
                    break
                continue
            if "etag" in fields:
                headers["If-None-Match"] = fields["etag"]
            if fields.get("connection", "").lower() == "close":
                writer.close()
                writer = None
            latencies.append(time.perf_counter() - started)
            statuses[status] = statuses.get(status, 0) + 1
            break
        if first:
            first = False
            answered[0] += 1
            if answered[0] == len(clients):
                print("ready", flush=True)
        await asyncio.sleep(max(0.0, 1.0 - (time.perf_counter() - started)))

async def main():
    loop = asyncio.get_running_loop()
    loop.add_reader(sys.stdin, stop.set)  # stdin closed: stop
    await asyncio.gather(*(poll_forever(path, token) for path, token in clients))

asyncio.run(main())
latencies.sort()
def pick(p):
    return 1000 * latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else None
print(json.dumps({"polls": len(latencies), "statuses": statuses, "errors": errors[0],
                  "error_kinds": error_kinds,
                  "p50_ms": pick(0.5), "p99_ms": pick(0.99)}), flush=True)
"""


def finished_export(services: Services, user) -> str:
    """An export of `user`'s, run to the end by a real worker (stopped afterwards)."""
    from app import db
    from app.exports import actions
    from app.models import Export

    worker = services.start_worker()
    export_id = actions.start_export(user, "json").id

    def done() -> bool:
        db.session.remove()
        return db.session.get(Export, export_id).status == "finished"

    wait_until(done, 600, "the export to finish")
    worker.stop()
    services.processes.remove(worker)
    return export_id


def exports_in_progress(user_ids: list[int]) -> list[tuple[str, str]]:
    """An export started for each user (queued: no worker runs now) and a token of each:
    (the export's API path, the token)."""
    from app import db
    from app.exports import actions
    from app.models import ApiToken, User

    polled = []
    for user_id in user_ids:
        user = db.session.get(User, user_id)
        export = actions.start_export(user, "json")
        _, secret = ApiToken.issue(user, "bench", "read", None)
        db.session.commit()
        polled.append((f"/api/exports/{export.id}", secret))
    db.session.remove()
    return polled


def measure(web: WebServer, path: str, cookie: str | None, headers: dict, expect: int,
            accept: str, args) -> dict:
    before = web_schedstat(web)
    result = run_load(web.port, path, cookie, args.connections, args.duration,
                      accept=accept, headers=headers, expect=expect)
    after = web_schedstat(web)
    served = max(len(result.latencies), 1)
    return {"rps": result.rps, "p50_ms": result.percentile_ms(50),
            "p99_ms": result.percentile_ms(99), "cpu_ms": (after[0] - before[0]) / 1e6 / served,
            "errors": result.errors}


def etag_of(web: WebServer, path: str, token: str) -> str:
    from bench.harness import Http

    status, msg, _ = Http(web.port).request("GET", path, headers={
        "Authorization": f"Bearer {token}", "Accept": "application/json"})
    if status != 200 or not msg.get("ETag"):
        raise SystemExit(f"GET {path}: HTTP {status}, no ETag")
    return msg["ETag"]


def poll_costs(web: WebServer, cookie: str, polled: dict[str, tuple[str, str]], args) -> dict:
    """Each kind of request in turn, `--repeat` times: median (min-max) of each figure."""
    kinds: dict[str, tuple[str, str | None, dict, int, str]] = {}
    for state, (path, token) in polled.items():
        auth = {"Authorization": f"Bearer {token}"}
        tag = etag_of(web, path, token)
        kinds[f"api_304_{state}"] = (path, None, {**auth, "If-None-Match": tag}, 304,
                                     "application/json")
        kinds[f"api_304_{state}_app"] = (f"{path}?by=app", None,
                                         {**auth, "If-None-Match": tag}, 304, "application/json")
        kinds[f"api_200_{state}"] = (path, None, auth, 200, "application/json")
    kinds["export_page"] = ("/exports", cookie, {}, 200, "text/html")
    runs: dict[str, list[dict]] = {kind: [] for kind in kinds}
    for path, kind_cookie, headers, expect, accept in kinds.values():  # warm every process up
        run_load(web.port, path, kind_cookie, args.connections, 1.0, accept=accept,
                 headers=headers, expect=expect)
    for n in range(args.repeat):
        for kind, (path, kind_cookie, headers, expect, accept) in kinds.items():
            runs[kind].append(measure(web, path, kind_cookie, headers, expect, accept, args))
            say(f"round {n + 1}: {kind}: {runs[kind][-1]['rps']:.0f}/s, "
                f"{runs[kind][-1]['cpu_ms']:.2f} ms CPU")
    return {kind: {figure: summary(r[figure] for r in results)
                   for figure in ("rps", "p50_ms", "p99_ms", "cpu_ms", "errors")}
            for kind, results in runs.items()}


def pollers_phase(web: WebServer, reader_cookie: str, polled: list[tuple[str, str]],
                  args) -> dict:
    """The home page idle, then with every client polling, `--repeat` times each."""
    def home() -> dict:
        return measure(web, "/", reader_cookie, {}, 200, "text/html", args)

    idle = [home() for _ in range(args.repeat)]
    proc = subprocess.Popen([sys.executable, "-c", POLLERS, str(web.port),
                             "0" if args.quick else "19"], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        proc.stdin.write(json.dumps(polled) + "\n")
        proc.stdin.flush()
        if proc.stdout.readline().strip() != "ready":
            raise SystemExit("the pollers did not start")
        say(f"{len(polled)} clients polling")
        busy = [home() for _ in range(args.repeat)]
        proc.stdin.close()
        clients = json.loads(proc.stdout.readline())
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
    return {
        "clients": len(polled), "pollers": clients,
        "home_idle": {f: summary(r[f] for r in idle) for f in ("rps", "p50_ms", "p99_ms")},
        "home_polled": {f: summary(r[f] for r in busy) for f in ("rps", "p50_ms", "p99_ms")},
        "p99_ratio": summary(b["p99_ms"] / i["p99_ms"] for b, i in zip(busy, idle, strict=True)),
        "errors": sum(r["errors"] for r in idle + busy),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench api")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--clients", default="100,1000", help="client counts, in turn")
    parser.add_argument("--quick", action="store_true", help="0.5 s, 1 round, 50 clients")
    parser.add_argument("--database", default="sqlite")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.repeat, args.clients = 0.5, 1, "50"
    counts = [int(n) for n in args.clients.split(",")]
    raise_open_files(max(counts) + 1024)  # the web inherits it: a socket per client

    results: dict = {"machine": None, "duration_s": args.duration,
                     "connections": args.connections}
    with Services(NAME, database=args.database) as services:
        results["machine"] = services.machine()
        poller = create_user("poller")
        add_posts(poller.id, 1000)
        reader = create_user("reader")
        add_posts(reader.id, 100)
        analyze()
        say("a finished export for the poller")
        finished = finished_export(services, poller)
        from app import db
        from app.models import ApiToken

        _, token = ApiToken.issue(poller, "bench", "read", None)
        db.session.commit()
        queued_user = create_user("queued")
        [queued] = exports_in_progress([queued_user.id])
        say(f"{max(counts)} users, each with an export in progress")
        clients = exports_in_progress(create_users("client", max(counts)))
        web = services.start_web()
        polled = {"finished": (f"/api/exports/{finished}", token), "in_progress": queued}
        results["costs"] = poll_costs(web, login(web.port, "poller"), polled, args)
        reader_cookie = login(web.port, "reader")
        results["pollers"] = [pollers_phase(web, reader_cookie, clients[:count], args)
                              for count in counts]

    costs = results["costs"]
    page_cpu = costs["export_page"]["cpu_ms"]["median"] or float("nan")
    results["poll_ratio"] = {state: round(costs[f"api_304_{state}"]["cpu_ms"]["median"]
                                          / page_cpu, 3) for state in polled}
    results["app_poll_ratio"] = {
        state: round(costs[f"api_304_{state}_app"]["cpu_ms"]["median"] / page_cpu, 3)
        for state in polled}
    results["targets"] = {"poll_ratio": TARGET_POLL_RATIO, "page_p99_ratio": TARGET_PAGE_P99}
    rows = [[kind, fmt(c["rps"], digits=0), fmt(c["p50_ms"]), fmt(c["p99_ms"]),
             fmt(c["cpu_ms"]), fmt(c["errors"], digits=0)] for kind, c in costs.items()]
    print(table(["request", "req/s", "p50 ms", "p99 ms", "web CPU ms/req", "errors"], rows))
    for state, ratio in results["poll_ratio"].items():
        print(f"304 poll ({state}) / export page, CPU per request: {ratio} "
              f"(target < {TARGET_POLL_RATIO}); answered by the app: "
              f"{results['app_poll_ratio'][state]}")
    rows = []
    for pollers in results["pollers"]:
        polls = pollers["pollers"]
        rows.append([pollers["clients"], polls["polls"], polls["statuses"].get("304", 0),
                     polls["errors"], number(polls["p50_ms"]), number(polls["p99_ms"]),
                     fmt(pollers["home_idle"]["p99_ms"]), fmt(pollers["home_polled"]["p99_ms"]),
                     fmt(pollers["p99_ratio"])])
    print()
    print(table(["clients", "polls", "304s", "errors", "poll p50 ms", "poll p99 ms",
                 "home p99 idle", "home p99 polled", "ratio"], rows))
    print(f"target: with 1,000 clients, home p99 polled / idle <= {TARGET_PAGE_P99}")
    emit(NAME, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
