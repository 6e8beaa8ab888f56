#!/usr/bin/env bash
# `make test-under-load`: the suite on a machine that is busy with other work, as a newcomer's
# laptop is. `make test` three times in a row beside two CPU hogs (stress-ng --cpu 2 when it is
# installed, else two busy Python loops), then two `make test` at once. Prints each run's
# result and time; exits non-zero if any run failed. Each run's full output is kept in a
# temporary folder whose path is printed.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
LOG_DIR=$(mktemp -d -t microblog-under-load.XXXXXX)
RUNS=${UNDER_LOAD_RUNS:-3}
SUMMARY=()
FAILED=0
HOGS=()

start_hogs() {
    if command -v stress-ng >/dev/null 2>&1; then
        stress-ng --cpu 2 --quiet &
        HOGS+=($!)
    else
        local i
        for i in 1 2; do
            python3 -c 'while True: pass' &
            HOGS+=($!)
        done
    fi
}

stop_hogs() {
    if [ ${#HOGS[@]} -gt 0 ]; then
        kill "${HOGS[@]}" 2>/dev/null
        wait "${HOGS[@]}" 2>/dev/null
    fi
    HOGS=()
}
trap stop_hogs EXIT

# The line pytest ends with ("826 passed, 3 skipped in 412.3s"), or the make error.
outcome() { grep -E "(passed|failed|error)" "$1" | tail -1; }

record() {  # label exit_code seconds log
    local verdict=passed
    if [ "$2" != 0 ]; then verdict="FAILED (exit $2)"; FAILED=1; fi
    SUMMARY+=("$1: $verdict in $3 s, load average $(cut -d' ' -f1-3 /proc/loadavg): $(outcome "$4")")
    echo "-- ${SUMMARY[-1]}"
}

# The environment of a fresh machine: SQLite and the embedded Redis.
make_test() { env -u MICROBLOG_TEST_DATABASE_URL -u MICROBLOG_TEST_REDIS_URL make test </dev/null; }

echo "logs: $LOG_DIR"
make install >/dev/null || exit 1

start_hogs
echo "CPU hogs: ${HOGS[*]} ($(command -v stress-ng >/dev/null && echo stress-ng || echo python loops))"
for run in $(seq 1 "$RUNS"); do
    log=$LOG_DIR/hogs-$run.log
    start=$SECONDS rc=0
    make_test >"$log" 2>&1 || rc=$?
    record "make test beside two CPU hogs, run $run/$RUNS" "$rc" $((SECONDS - start)) "$log"
done
stop_hogs

start=$SECONDS
make_test >"$LOG_DIR/pair-a.log" 2>&1 &
first=$!
make_test >"$LOG_DIR/pair-b.log" 2>&1 &
second=$!
rc=0; wait "$first" || rc=$?
record "make test beside a second make test (a)" "$rc" $((SECONDS - start)) "$LOG_DIR/pair-a.log"
rc=0; wait "$second" || rc=$?
record "make test beside a second make test (b)" "$rc" $((SECONDS - start)) "$LOG_DIR/pair-b.log"

echo
echo "== make test-under-load ($(nproc) CPUs) =="
for line in "${SUMMARY[@]}"; do echo "  $line"; done
echo "logs: $LOG_DIR"
exit "$FAILED"
