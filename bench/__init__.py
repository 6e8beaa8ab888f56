"""Microblog's benchmarks: figures printed as a table plus one `BENCH_JSON {...}` line each.

    python -m bench                      # all of them (`make bench`)
    python -m bench export --sizes 10000,100000
    python -m bench download [--posts 1000000] [--storage local,s3]
    python -m bench dispatch|pages|latency|burst [--quick]
    python -m bench peers [--quick] [--peers DIR]   # against the tutorial's app
    python -m bench soak --duration 60
    python -m bench api [--clients 1000] [--quick]   # API polls: 304, 200, the page

Every figure is a ratio against a baseline measured in the same run (the machines are
shared and noisy), given as the median of several repetitions with the min-max beside it.
Each benchmark starts its own services in a temporary directory (an embedded redis-server on
a Unix socket, a SQLite file or its own PostgreSQL database, an aiosmtpd server) and the real
worker and web commands of `make run`, and stops them all when it ends. See
docs/performance.md for what each one measures and the latest figures.
"""

BENCHMARKS = ("export", "imports", "download", "dispatch", "queues", "pages", "latency", "burst",
              "soak", "api", "peers")
