#!/usr/bin/env bash
# The body every sbatch script in launch/ runs: start (or resume) one psgd run under MPI,
# and requeue the job when SLURM warns that the time limit is near: the warning (SIGUSR1) is
# forwarded to the ranks, psgd writes a checkpoint at the end of the round in flight and exits
# with status 3, and only then is the job requeued, so a requeue loses at most one round.
#
#   bash launch/psgd_job.sh CONFIG [NAME]      (inside an allocation; NAME defaults to the config's name)
#
# The run folder is runs/NAME (PSGD_RUNS overrides runs/):
#   - summary.json there: the run is finished; nothing to do.
#   - checkpoint.psgd there: continue it with --resume (after a requeue, a crash, a time limit).
#   - a folder without a checkpoint (killed before its first one): kept as NAME.incomplete-<time>, fresh start.
# checkpoint_every in the config bounds what a crash (not a time limit) loses.
#
# Ranks: SLURM_NTASKS (rank 0 the server, the rest workers). Launcher: the venv's MPICH
# mpirun (Hydra), which reads the allocation from SLURM and starts one proxy per node with
# srun; PSGD_LAUNCHER=srun uses `srun --mpi=pmi2` instead. PSGD_HOSTS passes a Hydra host
# list (-hosts n1:5,n2:4); PSGD_ARGS adds arguments for psgd.train (e.g. "--set rounds=10").
set -u
config=${1:?usage: psgd_job.sh CONFIG [NAME]}
root=${PSGD_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
cd "$root" || exit 1
py=${PSGD_PYTHON:-$root/.venv/bin/python}
name=${2:-$("$py" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["name"])' "$config")} || exit 2
run=${PSGD_RUNS:-runs}/$name
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONUNBUFFERED=1

if [ -f "$run/summary.json" ]; then
  echo "[launch] $run is finished (summary.json); nothing to do"
  exit 0
elif [ -f "$run/checkpoint.psgd" ]; then
  echo "[launch] resuming $run from its checkpoint (restart ${SLURM_RESTART_COUNT:-0})"
  args=(--resume "$run")
else
  if [ -e "$run" ]; then
    aside="$run.incomplete-$(date +%s)"
    echo "[launch] $run has no checkpoint; moved aside to $aside"
    mv "$run" "$aside" || exit 1
  fi
  mkdir -p "$(dirname "$run")"
  args=("$config" --out "$run")
fi
# shellcheck disable=SC2206  # PSGD_ARGS is split on purpose
args+=(--quiet ${PSGD_ARGS:-})

ranks=${PSGD_RANKS:-${SLURM_NTASKS:-3}}
if [ "${PSGD_LAUNCHER:-mpirun}" = srun ]; then
  launch=(srun --mpi=pmi2 -n "$ranks" --kill-on-bad-exit=1)
else
  launch=("$(dirname "$py")/mpirun" -n "$ranks" ${PSGD_HOSTS:+-hosts "$PSGD_HOSTS"})
fi

requeue() {
  echo "[launch] time limit near: asking psgd to checkpoint and stop"
  kill -USR1 "$child" 2>/dev/null
  wait "$child"
  status=$?
  if [ $status -eq 3 ]; then  # stopped at a round boundary with a checkpoint
    echo "[launch] requeueing job ${SLURM_JOB_ID:-?}; the next start resumes $run"
    scontrol requeue "${SLURM_JOB_ID:?}"
    exit 0
  fi
  exit $status
}
trap requeue USR1

echo "[launch] ${launch[*]} $py -m psgd.train ${args[*]}"
"${launch[@]}" "$py" -m psgd.train "${args[@]}" &
child=$!
# `wait` returns early when the trap fires; a plain foreground command would defer it.
wait "$child"
status=$?
trap - USR1
exit $status
