"""Progress latency: the time from a worker's progress write to a page seeing it, through live
push (GET /events, Server-Sent Events) and, in the same run, through the polling the page
falls back to (GET /notifications?since=..., 1 s after each response: microblog.js).

Two users with many posts each press Export at the same moment (`user.launch_task`, as the
web does), and two real workers (as `make run` starts them) run the two exports side by side;
their progress comes from the app's own `lifecycle.Progress` (one event per whole percent at most
every TASK_PROGRESS_INTERVAL). Rounds repeat until at least `--events` progress events have
been published. Each user holds `--streams-per-user` real /events streams to gunicorn (as
`make run` runs it) from the start, like open tabs; one page-like client of the first user
polls meanwhile. Every arrival is timed on this machine's clock, which the worker shares:

  from publish: arrival - the event's `sent` (app/events/, just before the Redis publish);
  from write:   arrival - the notification's `timestamp` (set by the worker before its
                commit; for the polling client the only one there is).

After each round the events each stream received are checked against the user's event log
in Redis (what was published): events lost, duplicated or out of order (all should be 0).

    python -m bench latency [--events 200] [--export-posts 1000000] [--streams-per-user 2]
                            [--quick] [--database ...]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import urllib.parse

from bench.harness import (
    EventStream,
    Http,
    Services,
    StreamClients,
    StreamEvent,
    add_posts,
    analyze,
    create_user,
    emit,
    login,
    percentile,
    say,
    stream_caps,
    table,
    wait_until,
)

NAME = "latency"
PAGE_POLL_S = 1.0  # FAST in microblog.js
ENDED = ("finished", "failed", "cancelled")
TARGET_P95_MS = 250


def id_key(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq)


class PagePoller:
    """Polls /notifications like the page (1 s after each response) in a thread, recording
    for every task_progress notification it sees: received - its timestamp (seconds)."""

    def __init__(self, port: int, cookie: str) -> None:
        self.client = Http(port, cookie)
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        self.client.close()

    def _run(self) -> None:
        since = time.time()  # the page starts polling when it loads
        while not self._stop.is_set():
            status, _, body = self.client.request(
                "GET", "/notifications?" + urllib.parse.urlencode({"since": repr(since)}),
                headers={"Accept": "application/json"})
            received = time.time()
            if status != 200:
                raise RuntimeError(f"/notifications answered HTTP {status}")
            for n in json.loads(body):
                since = max(since, n["timestamp"])
                if n["name"] == "task_progress":
                    self.latencies.append(received - n["timestamp"])
            self._stop.wait(PAGE_POLL_S)


class Round:
    """Both exports launched at once; done when every stream has the end of both tasks."""

    def __init__(self, services: Services, users: list, streams: dict[int, list[EventStream]],
                 received: dict[EventStream, list[StreamEvent]]) -> None:
        from app import events

        self.services = services
        self.users = users
        self.streams = streams
        self.received = received
        self.start_ids = {u.id: events.latest_id(services.redis, u.id) for u in users}
        self.task_ids: dict[int, str] = {}

    def run(self, timeout: float) -> None:
        for user in self.users:
            self.task_ids[user.id] = user.launch_task("export_posts", "Exporting posts...").id
        wait_until(self._all_ended, timeout, "both exports to end at every stream",
                   interval=0.2)

    def _all_ended(self) -> bool:
        for user_id, task_id in self.task_ids.items():
            for stream in self.streams[user_id]:
                ends = [d["status"] for d in self._task_data(stream, user_id)
                        if d["task_id"] == task_id and d["status"] in ENDED]
                if not ends:
                    return False
                if ends[0] != "finished":
                    raise RuntimeError(f"export {task_id} {ends[0]}")
        return True

    def live(self, stream: EventStream, user_id: int) -> list[StreamEvent]:
        """What the stream received in this round (the state sent on connecting and the
        events of earlier rounds have ids up to the round's start)."""
        start = id_key(self.start_ids[user_id])
        return [e for e in list(self.received.get(stream, ()))
                if e.id is not None and id_key(e.id) > start]

    def _task_data(self, stream: EventStream, user_id: int) -> list[dict]:
        found = []
        for e in self.live(stream, user_id):
            payload = json.loads(e.data)
            if payload["name"] == "task_progress":
                found.append(payload["data"])
        return found

    def published(self, user_id: int) -> list[tuple[str, dict]]:
        """The user's events of this round from the event log (what the streams forward:
        not the `sessions` control events)."""
        from app import events

        start = self.start_ids[user_id]
        entries = self.services.redis.xrange(events.log_key(user_id), min=start, max="+")
        found = []
        for entry_id, fields in entries:
            entry_id = entry_id.decode()
            payload = json.loads(fields[b"event"])
            if entry_id != start and payload["name"] != events.SESSIONS_CHANGED:
                found.append((entry_id, payload))
        return found

    def figures(self) -> dict:
        """Latencies (s) of this round's task events at every stream, and the checks."""
        from_sent, from_written = [], []
        lost = duplicated = out_of_order = progress_events = 0
        overlap = []
        task_events = {}
        for user in self.users:
            published = self.published(user.id)
            task_events[user.id] = sum(1 for _, p in published if p["name"] == "task_progress")
            progress_events += sum(
                1 for _, p in published
                if p["name"] == "task_progress" and p["data"]["status"] == "running")
            sent = [p["sent"] for _, p in published if p["name"] == "task_progress"]
            overlap.append((min(sent), max(sent)))
            expected = {event_id for event_id, _ in published}
            for stream in self.streams[user.id]:
                live = self.live(stream, user.id)
                ids = [e.id for e in live]
                lost += len(expected - set(ids))
                duplicated += len(ids) - len(set(ids))
                out_of_order += sum(1 for a, b in zip(ids, ids[1:], strict=False)
                                    if id_key(b) <= id_key(a))
                for e in live:
                    payload = json.loads(e.data)
                    if payload["name"] == "task_progress":
                        from_sent.append(e.arrived - payload["sent"])
                        from_written.append(e.arrived - payload["timestamp"])
        both = min(end for _, end in overlap) - max(start for start, _ in overlap)
        span = max(end for _, end in overlap) - min(start for start, _ in overlap)
        return {"from_sent": from_sent, "from_written": from_written, "lost": lost,
                "duplicated": duplicated, "out_of_order": out_of_order,
                "progress_events": progress_events,
                "polled_user_task_events": task_events[self.users[0].id],
                "both_running": max(both, 0.0) / span if span > 0 else 0.0, "span_s": span}


def latency_figures(seconds: list[float]) -> dict:
    return {"n": len(seconds),
            "p50_ms": round(1000 * percentile(seconds, 50), 1),
            "p95_ms": round(1000 * percentile(seconds, 95), 1),
            "max_ms": round(1000 * max(seconds), 1) if seconds else None}


def run(args) -> dict:
    with Services(NAME, database=args.database, proposed=args.proposed) as services:
        from app import db

        users = [create_user(f"exporter{i}") for i in range(2)]
        for user in users:
            add_posts(user.id, args.export_posts)
        analyze()
        db.session.commit()
        machine = services.machine()
        web = services.start_web(**stream_caps(len(users), args.streams_per_user))
        cookies = {user.id: login(web.port, user.username) for user in users}
        workers = [services.start_worker() for _ in users]
        received: dict[EventStream, list[StreamEvent]] = {}

        def on_event(stream: EventStream, event: StreamEvent) -> None:
            received.setdefault(stream, []).append(event)

        rounds: list[dict] = []
        with StreamClients() as clients:
            streams = {user.id: clients.open(web.port, [cookies[user.id]],
                                             args.streams_per_user, on_event)
                       for user in users}
            poller = PagePoller(web.port, cookies[users[0].id])
            poller.start()
            try:
                while (len(rounds) < args.max_rounds
                       and sum(r["progress_events"] for r in rounds) < args.events):
                    this = Round(services, users, streams, received)
                    this.run(timeout=600)
                    rounds.append(this.figures())
                    db.session.rollback()
                    say(f"latency: round {len(rounds)}: "
                        f"{rounds[-1]['progress_events']} progress events, push p95 "
                        f"{1000 * percentile(rounds[-1]['from_sent'], 95):.1f} ms")
            finally:
                poller.stop()
            ended = sum(s.ended_by_server for group in streams.values() for s in group)
        for worker in workers:
            worker.stop()
    from_sent = [x for r in rounds for x in r["from_sent"]]
    from_written = [x for r in rounds for x in r["from_written"]]
    push = {"from_publish": latency_figures(from_sent),
            "from_write": latency_figures(from_written)}
    return {"machine": machine, "worker": services.worker_class_label,
            "gunicorn": "gunicorn.conf.py (as make run)", "export_posts": args.export_posts,
            "rounds": len(rounds), "streams_per_user": args.streams_per_user,
            "progress_events": sum(r["progress_events"] for r in rounds),
            "both_exports_running": [round(r["both_running"], 2) for r in rounds],
            "round_s": [round(r["span_s"], 1) for r in rounds],
            "push": push,
            "page_poll": {"poll_interval_s": PAGE_POLL_S,
                          "published": sum(r["polled_user_task_events"] for r in rounds),
                          "from_write": latency_figures(poller.latencies)},
            "lost": sum(r["lost"] for r in rounds),
            "duplicated": sum(r["duplicated"] for r in rounds),
            "out_of_order": sum(r["out_of_order"] for r in rounds),
            "streams_ended_by_server": ended,
            "target": {"push_p95_ms_max": TARGET_P95_MS}}


def report(result: dict) -> str:
    def cells(f: dict | None) -> list[str]:
        if f is None or not f["n"]:
            return ["-", "-", "-"]
        return [f"{f['p50_ms']:.1f}", f"{f['p95_ms']:.1f}", f"{f['max_ms']:.1f}"]

    push, poll = result["push"], result["page_poll"]
    rows = [["push (/events), from publish", push["from_publish"]["n"],
             *cells(push["from_publish"])],
            ["push (/events), from write", push["from_write"]["n"], *cells(push["from_write"])],
            [f"page poll (every {poll['poll_interval_s']:.0f} s), from write",
             poll["from_write"]["n"], *cells(poll["from_write"])]]
    text = table(["client, latency", "arrivals", "p50 ms", "p95 ms", "max ms"], rows)
    p95 = push["from_publish"]["p95_ms"]
    return text + (
        f"\n{result['progress_events']} progress events published in {result['rounds']} "
        f"round(s) of two exports of {result['export_posts']:,} posts (both running "
        f"{', '.join(f'{100 * x:.0f}%' for x in result['both_exports_running'])} of each "
        f"round), {result['streams_per_user']} streams per user; lost {result['lost']}, "
        f"duplicated {result['duplicated']}, out of order {result['out_of_order']}, streams "
        f"ended by the server {result['streams_ended_by_server']}"
        f"\npush p95 from publish {p95} ms (target ≤ {TARGET_P95_MS} ms: "
        f"{'met' if p95 <= TARGET_P95_MS else 'missed'}); the poller saw "
        f"{poll['from_write']['n']} of its user's {poll['published']} task events (only the "
        f"newest of a task at each poll)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench latency", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200,
                        help="progress events to publish at least (rounds repeat until then)")
    parser.add_argument("--export-posts", type=int, default=1_000_000,
                        help="posts of each of the two exporting users")
    parser.add_argument("--streams-per-user", type=int, default=2)
    parser.add_argument("--max-rounds", type=int, default=10)
    parser.add_argument("--quick", action="store_true",
                        help="one round of two small exports (smoke test)")
    parser.add_argument("--database", default="sqlite", choices=["sqlite", "postgresql"])
    parser.add_argument("--proposed", action="store_true",
                        help="worker warmed up as docs/performance.md proposes (3)")
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.export_posts, args.max_rounds = 1, 20_000, 1
    result = run(args)
    print(report(result))
    emit(NAME, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
