"""The export burst: N users (50) each press "Export your posts" twice at the same moment
(two tabs of one browser, all 2N requests released together by a barrier), with 2 RQ workers
and gunicorn started as `make run` starts them, and mail going to a real SMTP server.

What must hold (checked; the exit status is 1 otherwise): exactly N export tasks (the second
press of each user is refused while the first export is active), all finished; exactly N
mails, one to each user, each the export mail with posts.json; no response with a 5xx status
and none unexpected. What is reported: the page p99 during the burst, i.e. every page the
users load from the barrier until the last export ended (the profile page each press
redirects to, then /notifications once a second while the export runs, as the page's own
script polls), next to the presses' own p50/p99.

The SMTP server holds its replies until every press has been answered: otherwise a user's
first export could finish before their second press reached the server, and that second
export would rightly be a new one. Once released, mail is accepted at once.

    python -m bench burst [--users 50] [--repeat 3] [--quick] [--database sqlite|postgresql|URL]
"""

from __future__ import annotations

import argparse
import threading
import time
import urllib.parse
from collections import Counter

from bench.harness import Services, emit, fmt, say, summary, table
from bench.traffic import (
    Client,
    Recorder,
    add_server_options,
    after_run,
    create_users_with_posts,
    join_all,
    log_in_all,
    servers_note,
    start_servers,
    task_states,
    wait_tasks_terminal,
)

NAME = "burst"
WORKERS = 2
POLL_INTERVAL = 1.0  # the page's own poll while a task runs (app/static/js/microblog.js)
PAGE_KINDS = ("profile_page", "notifications")
EXPORT_SUBJECT = b"[Microblog] Your blog posts"
REFUSAL = "An export task is currently in progress"  # the flash on a second press


def _press(tab: Client, barrier: threading.Barrier, refused: list[str]) -> None:
    barrier.wait(60)
    response = tab.post("export_press", "/export_posts", {})
    if response is not None and response.status_code == 302:  # the browser follows it
        path = urllib.parse.urlsplit(response.headers["Location"]).path
        page = tab.get("profile_page", path)
        if page is not None and REFUSAL in page.text:
            refused.append(tab.user.username)  # list.append is atomic


def _watch(client: Client, timeout: float) -> None:
    """Poll /notifications as the page does until the user's export is no longer active."""
    since = 0.0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get("notifications", f"/notifications?since={since}", json=True)
        if response is not None and response.status_code == 200:
            for note in response.json():
                since = max(since, note["timestamp"])
                data = note["data"]
                if note["name"] == "task_progress" and data["name"] == "export_posts" \
                        and data["status"] not in ("queued", "running"):
                    return
        time.sleep(POLL_INTERVAL)


def burst_round(services: Services, port: int, label: str, users_count: int, presses: int,
                posts: int, timeout: float) -> dict:
    users = create_users_with_posts(f"{label}u", users_count, posts)
    setup = Recorder()
    clients = [Client(port, user, setup) for user in users]
    log_in_all(clients)
    for client in clients:  # the profile page, with its Export button and CSRF token
        client.get("profile_page", f"/user/{client.user.username}")
    if setup.stats()["errors"]:
        raise RuntimeError(f"could not prepare the users: {setup.errors[:3]}")

    recorder = Recorder()
    tabs = []
    for client in clients:
        client.recorder = recorder
        tabs += [client] + [client.twin() for _ in range(presses - 1)]
    mails_before = len(services.smtp.messages)
    barrier = threading.Barrier(len(tabs) + 1)
    refused: list[str] = []
    services.smtp.hold()
    try:
        pressers = [threading.Thread(target=_press, args=(tab, barrier, refused), daemon=True)
                    for tab in tabs]
        for t in pressers:
            t.start()
        barrier.wait(60)
        started = time.perf_counter()
        join_all(pressers, timeout)
        pressed = time.perf_counter() - started
    finally:
        services.smtp.release()
    watchers = [threading.Thread(target=_watch, args=(c, timeout), daemon=True)
                for c in clients]
    for t in watchers:
        t.start()
    join_all(watchers, timeout + 10)
    user_ids = [u.id for u in users]
    wait_tasks_terminal(user_ids, timeout)
    services.smtp.wait_for_count(mails_before + users_count, timeout)
    time.sleep(2)  # a duplicate would arrive now
    elapsed = time.perf_counter() - started
    for tab in tabs:
        tab.close()

    mails = services.smtp.messages[mails_before:]
    per_recipient = Counter(r for mail in mails for r in mail.recipients)
    wrong_mails = sum(1 for mail in mails if not mail.content
                      or EXPORT_SUBJECT not in mail.content or b"posts.json" not in mail.content)
    states = task_states(user_ids, "export_posts")
    everything = recorder.stats()
    return {
        "users": users_count, "presses": len(tabs),
        "tasks": sum(states.values()), "task_states": dict(states),
        "refused_presses": len(refused), "users_refused": len(set(refused)),
        "mails": len(mails),
        "users_with_one_mail": sum(per_recipient[u.email] == 1 for u in users),
        "mails_to_others": sum(n for r, n in per_recipient.items()
                               if r not in {u.email for u in users}),
        "wrong_mails": wrong_mails,
        "responses": everything["count"], "status_5xx": everything["status_5xx"],
        "unexpected": everything["errors"], "first_errors": recorder.errors[:5],
        "resent": everything["resent"], "resent_because": recorder.retry_reasons,
        "statuses": dict(Counter(s.status for s in recorder.samples)),
        "press": recorder.stats(["export_press"]),
        "page": recorder.stats(PAGE_KINDS),
        "by_kind": recorder.by_kind(),
        "presses_answered_s": round(pressed, 2),
        "last_mail_s": round(elapsed - 2, 2),
    }


def check(r: dict) -> list[str]:
    """What a round got wrong, as sentences (empty when it held)."""
    n = r["users"]
    problems = []
    if r["tasks"] != n:
        problems.append(f"{r['tasks']} export tasks for {n} users")
    if r["refused_presses"] != r["presses"] - n or r["users_refused"] != min(n, r["presses"] - n):
        problems.append(f"{r['refused_presses']} presses were told an export is in progress "
                        f"({r['users_refused']} users)")
    if r["task_states"].get("finished", 0) != n:
        problems.append(f"task states {r['task_states']}")
    if r["mails"] != n or r["users_with_one_mail"] != n or r["mails_to_others"]:
        problems.append(f"{r['mails']} mails, {r['users_with_one_mail']} of {n} users got "
                        f"exactly one, {r['mails_to_others']} to someone else")
    if r["wrong_mails"]:
        problems.append(f"{r['wrong_mails']} mails are not the export mail with posts.json")
    if r["status_5xx"] or r["unexpected"]:
        problems.append(f"{r['status_5xx']} responses with a 5xx status, {r['unexpected']} "
                        f"unexpected: {r['first_errors']}")
    return problems


def run(users: int, presses: int, posts: int, repeat: int, database: str,
        timeout: float, proposed: bool = False) -> dict:
    with Services(NAME, database=database, keep_mail=True, proposed=proposed) as services:
        machine = services.machine()
        _, web = start_servers(services, WORKERS)
        rounds = []
        for n in range(repeat):
            result = burst_round(services, web.port, f"b{n}", users, presses, posts, timeout)
            result["problems"] = check(result)
            rounds.append(result)
            say(f"burst: round {n + 1}/{repeat}: {result['tasks']} tasks, {result['mails']} "
                f"mails, {result['status_5xx']} 5xx, page p99 {result['page']['p99_ms']} ms"
                + (f"; PROBLEMS: {result['problems']}" if result["problems"] else ""))
        end = after_run(services)
    machine["loadavg_after"] = end["loadavg_after"]
    return {
        "machine": machine, "workers": WORKERS, "users": users, "presses_each": presses,
        "posts_each": posts, "repeat": repeat, "rounds": rounds,
        "page_p99_ms": summary([r["page"]["p99_ms"] or float("nan") for r in rounds], 1),
        "press_p99_ms": summary([r["press"]["p99_ms"] or float("nan") for r in rounds], 1),
        "last_mail_s": summary([r["last_mail_s"] for r in rounds], 1),
        "log_tracebacks": end["log_tracebacks"], "web_worker_deaths": end["web_worker_deaths"],
        "ok": not any(r["problems"] for r in rounds) and not end["web_worker_deaths"],
    }


def report(r: dict) -> str:
    rows = [[n + 1, round_["tasks"], round_["refused_presses"], round_["mails"],
             round_["users_with_one_mail"],
             round_["status_5xx"], round_["unexpected"],
             f"{round_['press']['p50_ms']} / {round_['press']['p99_ms']}",
             f"{round_['page']['p50_ms']} / {round_['page']['p99_ms']} "
             f"({round_['page']['count']})",
             round_["presses_answered_s"], round_["last_mail_s"]]
            for n, round_ in enumerate(r["rounds"])]
    text = table(["round", "tasks", "refused", "mails", "users w/ 1 mail", "5xx", "unexpected",
                  "press p50/p99 ms", "page p50/p99 ms (n)", "presses answered s",
                  "last mail s"], rows)
    text += (f"\n{r['users']} users × {r['presses_each']} presses, {r['workers']} workers; "
             f"page p99 {fmt(r['page_p99_ms'], ' ms', 0)}, press p99 "
             f"{fmt(r['press_p99_ms'], ' ms', 0)} (median (min–max) of {r['repeat']}); "
             f"requests sent again on a new connection: "
             f"{sum(x['resent'] for x in r['rounds'])}; {servers_note(r)}")
    for n, round_ in enumerate(r["rounds"]):
        for problem in round_["problems"]:
            text += f"\nround {n + 1}: {problem}"
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench burst", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--presses", type=int, default=2, help="presses per user, at once")
    parser.add_argument("--posts", type=int, default=20, help="posts per user")
    parser.add_argument("--repeat", type=int, default=3, help="rounds, each with new users")
    parser.add_argument("--timeout", type=float, default=300,
                        help="seconds a round may take for each of its phases")
    parser.add_argument("--quick", action="store_true", help="10 users, one round")
    add_server_options(parser)
    args = parser.parse_args(argv)
    users, repeat = (10, 1) if args.quick else (args.users, args.repeat)
    result = run(users, args.presses, args.posts, repeat, args.database, args.timeout,
                 args.proposed)
    print(report(result))
    emit(NAME, result)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
