"""The plot of docs/performance.md: export throughput and peak memory against post count.

    python -m bench export --plot docs/export-throughput.png      # measure, then draw
    python -m bench.plot export-output.txt docs/export-throughput.png   # from a BENCH_JSON line

matplotlib is a bench-only dependency: `pip install -e '.[bench]'`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def plot_export(result: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = result["sizes"]
    posts = [s["posts"] for s in sizes]

    def series(key):
        med = [s[key]["median"] for s in sizes]
        low = [m - s[key]["min"] for m, s in zip(med, sizes, strict=True)]
        high = [s[key]["max"] - m for m, s in zip(med, sizes, strict=True)]
        return med, [low, high]

    from matplotlib.ticker import FuncFormatter, NullFormatter, NullLocator

    def count(x: float, _=None) -> str:
        for size, suffix in ((1e6, "M"), (1e3, "k")):
            if x >= size:
                return f"{x / size:g}{suffix}"
        return f"{x:g}"

    def log_axis(ax) -> None:
        ax.set_xscale("log")
        ax.set_xticks(posts)
        ax.xaxis.set_major_formatter(FuncFormatter(count))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlim(posts[0] / 1.6, posts[-1] * 1.6)

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.4))
    for key, label, marker in (("limit_posts_per_s", "limit (plain query + minimal loop)", "s"),
                               ("export_posts_per_s", "export task (enqueue → SMTP)", "o")):
        med, err = series(key)
        ax1.errorbar(posts, med, yerr=err, marker=marker, capsize=3, label=label)
    for s in sizes:
        ax1.annotate(f"{s['ratio']['median']:.2f}×",
                     (s["posts"], s["export_posts_per_s"]["median"]),
                     textcoords="offset points", xytext=(0, 8), ha="center", fontsize=8)
    log_axis(ax1)
    ax1.yaxis.set_major_formatter(FuncFormatter(count))
    ax1.set_xlabel("posts exported")
    ax1.set_ylabel("posts per second")
    top = max(s["limit_posts_per_s"]["max"] for s in sizes)
    ax1.set_ylim(bottom=0, top=top * 1.35)
    ax1.set_title("Export throughput (labels: export / limit)")
    ax1.legend(fontsize=8, loc="upper left")
    ax1.grid(alpha=0.3)

    med, err = series("peak_rss_mb")
    ax2.errorbar(posts, med, yerr=err, marker="o", capsize=3, color="tab:red",
                 label="worker peak RSS (worker + work horse)")
    for s in sizes:
        if s.get("mail_mb", 0) >= s.get("json_mb", 1):  # posts.json went as an attachment
            ax2.annotate(f"posts.json ({s['json_mb']:.1f} MB)\nattached to the mail",
                         (s["posts"], s["peak_rss_mb"]["median"]), textcoords="offset points",
                         xytext=(0, 10), ha="center", fontsize=7)
    idle, _ = series("worker_rss_mb")
    ax2.plot(posts, idle, linestyle="--", color="gray", label="worker RSS before the job")
    log_axis(ax2)
    ax2.set_ylim(bottom=0, top=max(med) * 1.4)
    ax2.set_xlabel("posts exported")
    ax2.set_ylabel("MB")
    ax2.set_title("Worker peak memory")
    ax2.legend(fontsize=8, loc="lower right")
    ax2.grid(alpha=0.3)

    machine = result.get("machine", {})
    fig.suptitle(f"Microblog export, {machine.get('database', '')} — {machine.get('nproc')} "
                 f"cores, {machine.get('cpu', '')}, Python {machine.get('python', '')}; "
                 f"median and min–max of {result.get('repeat')} runs", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def load_result(path: Path) -> dict:
    for line in path.read_text().splitlines():
        if line.startswith("BENCH_JSON "):
            data = json.loads(line[len("BENCH_JSON "):])
            if data.get("bench") == "export":
                return data
    raise SystemExit(f"no export BENCH_JSON line in {path}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    plot_export(load_result(Path(sys.argv[1])), Path(sys.argv[2]))
