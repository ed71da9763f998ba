#!/usr/bin/env bash
# Runs the pytest-mpi suite on N ranks: rank 0 prints, other ranks log to tests/mpi/logs/,
# ranks agree on failure inside the tests, and a timeout bounds the whole launch.
set -u
n=${1:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$here/.venv/bin/python}
launcher=$(dirname "$py")/mpirun
[ -x "$launcher" ] || launcher=mpirun
extra=()
"$launcher" --version 2>/dev/null | grep -q "Open MPI" && extra=(--allow-run-as-root --oversubscribe)
mkdir -p "$here/tests/mpi/logs"
export OMP_NUM_THREADS=1 PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
cd "$here" || exit 1
timeout "${MPI_TEST_TIMEOUT:-900}" "$launcher" -n "$n" "${extra[@]}" bash -c '
  rank=${PMI_RANK:-${OMPI_COMM_WORLD_RANK:-0}}
  if [ "$rank" = 0 ]; then
    exec "$0" -m pytest --with-mpi -q -p no:cacheprovider tests/mpi
  else
    exec "$0" -m pytest --with-mpi -q -p no:cacheprovider tests/mpi > "tests/mpi/logs/rank$rank.log" 2>&1
  fi' "$py"
status=$?
[ $status -eq 124 ] && echo "pytest-mpi on $n ranks timed out" >&2
[ $status -ne 0 ] && echo "pytest-mpi on $n ranks failed (exit $status); other ranks' logs: tests/mpi/logs/" >&2
exit $status
