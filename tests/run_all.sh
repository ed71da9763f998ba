#!/usr/bin/env bash
# Every test: installs what is missing into .venv, runs the multi-rank suites (3 and 5
# ranks, under pytest-mpi), then the single-process suite, whose summary prints last.
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here" || exit 1
[ -x .venv/bin/python ] || python3 -m venv .venv || exit 1
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]' || exit 1
export OMP_NUM_THREADS=1
status=0
for n in 3 5; do
  bash tests/run_mpi.sh "$n" || status=1
done
[ $status -ne 0 ] && echo "multi-rank tests failed (see above); the single-process suite runs next" >&2
.venv/bin/python -m pytest -q --ignore=tests/mpi tests
rc=$?
[ $rc -eq 0 ] && rc=$status
exit $rc
