"""The soak: mixed traffic (pages, posts, messages, exports) at a steady rate for a fixed time
(10 minutes by default) against gunicorn and 2 RQ workers started as `make run` starts them,
mail going to a real SMTP server; then a grace period for the last exports to end.

Each user is one thread with one browser session (logged in through the login form), sending
requests on a fixed schedule (`--rate` per second in all, spread evenly): an open loop, so a
slow server does not slow the offered load down; a client that falls a whole slot behind
skips it (reported as late). Every loop is bounded in count and time; loopback only.

What must hold (checked; the exit status is 1 otherwise):
* no error: every response has the status a browser expects (200 for a page, 302 after a
  form), none is a 5xx or missing;
* no stuck task: `--grace` seconds after the traffic stopped, no Task row is queued or
  running, and none failed;
* every finished export mailed its user exactly once;
* memory: the RSS of the long-lived processes of each group (gunicorn's master and workers;
  the RQ workers and their schedulers) grows by less than `--rss-bound-mb` (50 MB) per group
  from the end of the warm-up (the first fifth of the run, at most 60 s, when caches fill) to
  the end. The work horses, which live for one job, are counted in the peak only.

    python -m bench soak [--duration 600] [--rate 8] [--users 20] [--quick]
                         [--rss-bound-mb 50] [--database sqlite|postgresql|URL]
"""

from __future__ import annotations

import argparse
import math
import random
import threading
import time
from collections import Counter

from bench.harness import Services, emit, table
from bench.traffic import (
    CLIENT_TIMEOUT,
    BenchUser,
    Client,
    Recorder,
    RssWatch,
    add_server_options,
    after_run,
    create_users_with_posts,
    follow_ring,
    join_all,
    log_in_all,
    servers_note,
    start_servers,
    wait_tasks_terminal,
)

NAME = "soak"
WORKERS = 2
# The mix, by weight: mostly reading, as on any site; one request in 14 launches an export.
MIX = {"home": 20, "explore": 10, "profile": 15, "messages": 5, "notifications": 25,
       "post": 10, "message": 8, "export": 7}


def _one_request(client: Client, kind: str, other: BenchUser, n: int) -> None:
    if kind == "home":
        client.get(kind, "/index")
    elif kind == "explore":
        client.get(kind, "/explore")
    elif kind == "profile":
        client.get(kind, f"/user/{other.username}")
    elif kind == "messages":
        client.get(kind, "/messages")
    elif kind == "notifications":
        client.get(kind, "/notifications?since=0", json=True)
    elif kind == "post":
        client.post(kind, "/index", {"post": f"Soak post {n} by {client.user.username}."})
    elif kind == "message":
        client.post(kind, f"/send_message/{other.username}",
                    {"message": f"Soak message {n} from {client.user.username}."})
    elif kind == "export":
        client.post(kind, "/export_posts", {})
    else:
        raise ValueError(kind)


def _user_loop(client: Client, users: list[BenchUser], rng: random.Random, start: float,
               offset: float, interval: float, end: float, late: Counter) -> None:
    kinds, weights = list(MIX), list(MIX.values())
    others = [u for u in users if u.id != client.user.id] or users
    max_requests = math.ceil((end - start) / interval) + 1
    slot = 0
    for n in range(max_requests):
        due = start + offset + slot * interval
        now = time.monotonic()
        if due >= end:
            return
        if now < due:
            time.sleep(due - now)
        elif now - due > interval:  # a whole slot behind: skip to the next one due
            missed = int((now - due) // interval)
            late[client.user.username] += missed
            slot += missed
            continue
        _one_request(client, rng.choices(kinds, weights)[0], rng.choice(others), n)
        slot += 1


def run(duration: float, rate: float, users_count: int, posts: int, grace: float,
        bound_mb: float, database: str, seed: int, proposed: bool = False) -> dict:
    with Services(NAME, database=database, keep_mail=False, proposed=proposed) as services:
        machine = services.machine()
        workers, web = start_servers(services, WORKERS)
        users = create_users_with_posts("soak", users_count, posts)
        follow_ring(users, 5)
        setup = Recorder()
        clients = [Client(web.port, user, setup) for user in users]
        log_in_all(clients)
        for client in clients:
            client.get("home", "/index")  # a CSRF token for the forms
        if setup.stats()["errors"]:
            raise RuntimeError(f"could not prepare the users: {setup.errors[:3]}")
        recorder = Recorder()
        for client in clients:
            client.recorder = recorder

        groups = {
            "web": ([web.pid], [], True),
            # the workers' session leaders are bench.rusage, the bench's own wrapper
            "worker": ([w.pid for w in workers], [w.pid for w in workers], False),
            "worker+horses": ([w.pid for w in workers], [w.pid for w in workers], True),
        }
        warm_up = min(60.0, duration / 5)
        interval = users_count / rate
        late: Counter = Counter()
        with RssWatch(groups) as rss:
            rss.mark("start")
            start = time.monotonic()
            end = start + duration
            threads = [threading.Thread(
                target=_user_loop, daemon=True,
                args=(c, users, random.Random(seed * 1000 + i), start,
                      i * interval / users_count, interval, end, late))
                for i, c in enumerate(clients)]
            for t in threads:
                t.start()
            time.sleep(max(0.0, start + warm_up - time.monotonic()))
            rss.mark("warm")
            join_all(threads, max(1.0, end - time.monotonic()) + 2 * CLIENT_TIMEOUT)
            traffic_s = time.monotonic() - start
            rss.mark("traffic_end")
            user_ids = [u.id for u in users]
            states = wait_tasks_terminal(user_ids, grace)
            finished_exports = _finished_exports(user_ids)
            services.smtp.wait_for_count(sum(finished_exports.values()),
                                         max(5.0, start + traffic_s + grace - time.monotonic()))
            time.sleep(2)  # a duplicate would arrive now
            rss.mark("end")
        for client in clients:
            client.close()
        end_state = after_run(services)
        mail_counts = Counter(r for mail in services.smtp.messages for r in mail.recipients)
    machine["loadavg_after"] = end_state["loadavg_after"]

    emails = {u.id: u.email for u in users}
    mail_mismatches = sum(mail_counts[emails[uid]] != n for uid, n in finished_exports.items())
    mail_mismatches += sum(n for email, n in mail_counts.items()
                           if email not in set(emails.values()))
    mail_mismatches += sum(1 for u in users if u.id not in finished_exports
                           and mail_counts[u.email])
    memory = {
        name: {"start": rss.marks["start"][name], "warm": rss.marks["warm"][name],
               "traffic_end": rss.marks["traffic_end"][name], "end": rss.marks["end"][name],
               "max": round(rss.peak[name], 1),
               "growth": round(rss.marks["end"][name] - rss.marks["warm"][name], 1)}
        for name in groups}
    from app.models import TaskStatus

    result = {
        "machine": machine, "duration_s": duration, "traffic_s": round(traffic_s, 1),
        "rate_per_s": rate, "users": users_count, "workers": WORKERS, "seed": seed,
        "warm_up_s": warm_up, "grace_s": grace, "mix": MIX,
        "requests": recorder.stats(), "by_kind": recorder.by_kind(),
        "achieved_rate_per_s": round(len(recorder.samples) / traffic_s, 2),
        "late_slots": sum(late.values()),
        "first_errors": recorder.errors[:10], "resent_because": recorder.retry_reasons,
        "web_worker_deaths": end_state["web_worker_deaths"],
        "tasks": dict(states), "stuck_tasks": sum(states[s] for s in TaskStatus.ACTIVE),
        "failed_tasks": states[TaskStatus.FAILED],
        "exports_finished": sum(finished_exports.values()),
        "mails": sum(mail_counts.values()), "mail_mismatches": mail_mismatches,
        "rss_mb": memory, "rss_bound_mb": bound_mb,
        "log_tracebacks": end_state["log_tracebacks"],
    }
    result["problems"] = check(result)
    return result


def _finished_exports(user_ids: list[int]) -> Counter:
    import sqlalchemy as sa

    from app import db
    from app.models import Task, TaskStatus

    counts = Counter(dict(db.session.execute(
        sa.select(Task.user_id, sa.func.count(Task.id))
        .where(Task.user_id.in_(user_ids), Task.name == "export_posts",
               Task.status == TaskStatus.FINISHED)
        .group_by(Task.user_id)).all()))
    db.session.rollback()
    return counts


def check(r: dict) -> list[str]:
    problems = []
    if r["requests"]["errors"]:
        problems.append(f"{r['requests']['errors']} errors ({r['requests']['status_5xx']} "
                        f"with a 5xx status): {r['first_errors']}")
    if r["web_worker_deaths"]:
        problems.append(f"{r['web_worker_deaths']} gunicorn workers died or were killed")
    if r["stuck_tasks"] or r["failed_tasks"]:
        problems.append(f"tasks not finished {r['grace_s']:.0f} s after the traffic: "
                        f"{r['tasks']}")
    if r["mail_mismatches"]:
        problems.append(f"{r['mail_mismatches']} users' mails do not match their finished "
                        f"exports ({r['mails']} mails for {r['exports_finished']} exports)")
    for name in ("web", "worker"):
        if r["rss_mb"][name]["growth"] >= r["rss_bound_mb"]:
            problems.append(f"{name} RSS grew {r['rss_mb'][name]['growth']} MB "
                            f"(bound {r['rss_bound_mb']} MB)")
    return problems


def report(r: dict) -> str:
    rows = [[kind, s["count"], s["errors"], s["status_5xx"], s["resent"], s["p50_ms"],
             s["p99_ms"]] for kind, s in [*r["by_kind"].items(), ("all", r["requests"])]]
    text = table(["kind", "requests", "errors", "5xx", "resent", "p50 ms", "p99 ms"], rows)
    text += "\n\n" + table(
        ["RSS MB", "start", "after warm-up", "traffic end", "end", "max", "growth"],
        [[name, m["start"], m["warm"], m["traffic_end"], m["end"], m["max"], m["growth"]]
         for name, m in r["rss_mb"].items()])
    text += (f"\n\n{r['traffic_s']:.0f} s of traffic at {r['rate_per_s']}/s offered, "
             f"{r['achieved_rate_per_s']}/s sent ({r['late_slots']} late slots skipped), "
             f"{r['users']} users, {r['workers']} workers; tasks after {r['grace_s']:.0f} s "
             f"grace: {r['tasks']} ({r['stuck_tasks']} stuck); {r['mails']} mails for "
             f"{r['exports_finished']} finished exports; RSS bound: growth < "
             f"{r['rss_bound_mb']} MB per group (web, worker) after a {r['warm_up_s']:.0f} s "
             f"warm-up; {servers_note(r)}")
    for problem in r["problems"]:
        text += f"\nPROBLEM: {problem}"
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=600, help="seconds of traffic")
    parser.add_argument("--rate", type=float, default=8, help="requests per second, in all")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--posts", type=int, default=50, help="posts per user at the start")
    parser.add_argument("--grace", type=float, default=90,
                        help="seconds after the traffic for every task to end")
    parser.add_argument("--rss-bound-mb", type=float, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="15 s of traffic (smoke test)")
    add_server_options(parser)
    args = parser.parse_args(argv)
    duration = 15 if args.quick else args.duration
    # The smoke test runs beside the rest of the suite: the wait ends when the tasks do, so a
    # long one costs an idle machine nothing.
    grace = max(args.grace, 240) if args.quick else args.grace
    result = run(duration, args.rate, args.users, args.posts, grace, args.rss_bound_mb,
                 args.database, args.seed, args.proposed)
    print(report(result))
    emit(NAME, result)
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
