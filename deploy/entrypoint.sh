#!/bin/sh
# testbed-entrypoint: what a container of the testbed image runs.
#
#   testbed-entrypoint run WORKLOAD [run options...]
#       one worker of a sweep: `testbed doctor` first (exit 3 if this node cannot
#       run testbed), then `testbed run ... --output $TESTBED_RESULTS/<worker>`,
#       <worker> being the pod's name (HOSTNAME) or, in CI, the job's.
#   testbed-entrypoint merge-report WORKERS_DIR OUT_DIR
#       after a sweep: `testbed merge`, then `testbed report` and, when
#       TESTBED_ASSERT is set, `testbed compare --assert ... --junit`; exits with
#       the first failure (an incomplete merge is one unless TESTBED_ALLOW_PARTIAL=1)
#       after doing all three. TESTBED_MATRIX_LISTING names a `testbed matrix --json`
#       file, so that missing runs are named.
#   testbed-entrypoint ANYTHING...
#       `testbed ANYTHING...` (doctor, matrix, compare, ...).
set -eu

results=${TESTBED_RESULTS:-/results}
testbed=${TESTBED_BIN:-testbed}

worker_name() {
    printf '%s' "${POD_NAME:-${HOSTNAME:-worker}}${JOB_COMPLETION_INDEX:+-$JOB_COMPLETION_INDEX}" |
        tr -c 'A-Za-z0-9_.-' '_'
}

run_worker() {
    if ! "$testbed" doctor >&2; then
        echo "testbed-entrypoint: this node cannot run testbed (see doctor above)" >&2
        exit 3
    fi
    exec "$testbed" "$@" --output "$results/$(worker_name)"
}

# run a step; keep the first failure's exit code in $status and go on
step() {
    "$@" || { rc=$?; [ "$status" -ne 0 ] || status=$rc; }
}

merge_report() {
    if [ $# -ne 2 ]; then
        echo "testbed-entrypoint: usage: merge-report WORKERS_DIR OUT_DIR" >&2
        exit 2
    fi
    workers=$1 out=$2 status=0
    set -- "$workers" -o "$out"
    [ "${TESTBED_ALLOW_PARTIAL:-0}" != 1 ] || set -- "$@" --allow-partial
    [ -z "${TESTBED_MATRIX_LISTING:-}" ] || set -- "$@" --matrix "$TESTBED_MATRIX_LISTING"
    step "$testbed" merge "$@"
    step "$testbed" report "$out" -o "$out/report.html"
    if [ -n "${TESTBED_ASSERT:-}" ]; then
        step "$testbed" compare "$out" --assert "$TESTBED_ASSERT" --junit "$out/junit.xml"
    fi
    exit $status
}

case "${1:-}" in
    run) run_worker "$@" ;;
    merge-report) shift; merge_report "$@" ;;
    "") exec "$testbed" --help ;;
    *) exec "$testbed" "$@" ;;
esac
