"""launch/ for real: a one-node SLURM (munged, slurmctld, slurmd from Debian's packages, as
root) runs a psgd sbatch job with 3 MPI ranks to completion; a job told that its time limit
is near (SIGUSR1, as --signal=B:USR1@120 sends it) checkpoints the round in flight, requeues
itself and the next start resumes from that checkpoint, ending with every round logged once.

Skipped, with the reason, when not root, when the packages cannot be installed, or when
the daemons do not start. Only the daemons this test started are stopped, by their pids.
"""

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
DAEMONS = ["munged", "slurmctld", "slurmd", "sbatch", "scontrol", "squeue", "scancel"]

CONFIG = """\
name = "{name}"
rounds = {rounds}
eval_every = {eval_every}
checkpoint_every = {checkpoint_every}
[task]
name = "digits_logreg"
batch_size = 16
[method]
name = "ef14"
uplink = "topk:ratio=0.1"
lr = 0.1
"""


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=kw.pop("timeout", 60), **kw)


def install() -> str | None:
    """None when the SLURM and munge commands are there (installing them if needed), else why not."""
    if all(shutil.which(d) for d in DAEMONS):
        return None
    if os.geteuid() != 0:
        return "SLURM is not installed and installing it needs root (apt-get install " + " ".join(PACKAGES) + ")"
    if not shutil.which("apt-get"):
        return "SLURM is not installed and there is no apt-get to install it"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        result = run(["apt-get", "install", "-y", "-qq", *PACKAGES], env=env, timeout=600)
        if result.returncode != 0:
            run(["apt-get", "update", "-qq"], env=env, timeout=600)
            result = run(["apt-get", "install", "-y", "-qq", *PACKAGES], env=env, timeout=600)
    except subprocess.TimeoutExpired:
        return "apt-get install " + " ".join(PACKAGES) + " timed out"
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return f"apt-get install {' '.join(PACKAGES)} failed: {last}"
    missing = [d for d in DAEMONS if not shutil.which(d)]
    return f"installed, but still missing: {', '.join(missing)}" if missing else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slurm_conf(d: Path, host: str) -> str:
    return f"""\
ClusterName=psgdtest
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/munge
AuthInfo=socket={d}/munge.socket
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
JobRequeue=1
NodeName={host} NodeAddr=127.0.0.1 CPUs=4 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def tail(path: Path, lines: int = 3) -> str:
    return " | ".join(path.read_text().strip().splitlines()[-lines:]) if path.exists() else f"(no {path.name})"


def wait_for(check, timeout: float, step: float = 1.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(step)
    return None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("starting munged, slurmctld and slurmd needs root")
    reason = install()
    if reason:
        pytest.skip(reason)
    d = tmp_path_factory.mktemp("slurm")
    d.chmod(0o755)  # munged refuses a socket folder others can write to
    for sub in ("state", "spool"):
        (d / sub).mkdir()
    (d / "munge.key").write_bytes(os.urandom(1024))
    (d / "munge.key").chmod(0o600)
    host = socket.gethostname().split(".")[0]
    (d / "slurm.conf").write_text(slurm_conf(d, host))
    env = {**os.environ, "SLURM_CONF": str(d / "slurm.conf")}
    pids = []
    try:
        started = run(
            ["munged", "--force", f"--socket={d}/munge.socket", f"--key-file={d}/munge.key",
             f"--pid-file={d}/munged.pid", f"--log-file={d}/munged.log", f"--seed-file={d}/munged.seed"]
        )  # fmt: skip
        if started.returncode != 0:
            pytest.skip(f"munged did not start: {started.stderr.strip() or tail(d / 'munged.log')}")
        pids.append(d / "munged.pid")
        for daemon in ("slurmctld", "slurmd"):
            started = run([daemon, "-f", str(d / "slurm.conf")], env=env)
            if started.returncode != 0:
                pytest.skip(f"{daemon} did not start: {started.stderr.strip() or tail(d / f'{daemon}.log')}")
            pids.append(d / f"{daemon}.pid")

        def idle():
            out = run(["sinfo", "-h", "-o", "%t"], env=env).stdout.strip()
            return out in ("idle", "mix", "alloc")

        if not wait_for(idle, 30):
            pytest.skip(f"the SLURM node did not come up: {tail(d / 'slurmctld.log')} / {tail(d / 'slurmd.log')}")
        yield env, d
    finally:
        if len(pids) == 3:  # cancel this cluster's jobs, so that no job step outlives its daemons
            run(["scancel", "--full", "--user", "root"], env=env)
            wait_for(lambda: not run(["squeue", "-h"], env=env).stdout.strip(), 20)
        for pidfile in reversed(pids):  # stop exactly the daemons this fixture started
            if pidfile.exists():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pidfile.read_text().split()[0]), 15)


def submit(env, d: Path, tmp: Path, name: str, rounds: int, checkpoint_every: int) -> tuple[str, Path, Path]:
    config = tmp / f"{name}.toml"
    config.write_text(CONFIG.format(name=name, rounds=rounds, eval_every=rounds, checkpoint_every=checkpoint_every))
    log = tmp / f"{name}.out"
    job_env = {**env, "PSGD_RUNS": str(tmp / "runs")}
    result = run(
        ["sbatch", "--parsable", "--ntasks=3", "--time=10", f"--output={log}", "launch/one_node.sbatch", str(config)],
        env=job_env,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().split(";")[0], tmp / "runs" / name, log


def job_field(env, job: str, field: str) -> str:
    out = run(["scontrol", "show", "job", job], env=env).stdout
    for word in out.split():
        if word.startswith(field + "="):
            return word.partition("=")[2]
    return ""


def nudge(env, job: str) -> None:
    """SLURM holds a requeued job for about two minutes; move its begin time to now. The pending
    reason reads BeginTime, or NonZeroExitCode when the requeue's kill reached the first start's
    batch shell before its own exit 0 (a race of the requeue, not a failure)."""
    if job_field(env, job, "JobState") == "PENDING" and job_field(env, job, "Reason") in (
        "BeginTime",
        "NonZeroExitCode",
    ):
        run(["scontrol", "update", f"JobId={job}", f"StartTime={time.strftime('%Y-%m-%dT%H:%M:%S')}"], env=env)


def resumed(env, job: str, log: Path) -> bool:
    """True once the requeued job's second start has logged that it resumes. The job's state
    alone cannot say it: right after the requeue it can still read COMPLETING (the first
    start's steps being cleaned up) before it turns PENDING."""
    nudge(env, job)
    return "resuming" in log.read_text()


def test_sbatch_runs_a_psgd_job_with_three_ranks(cluster, tmp_path):
    env, d = cluster
    job, run_dir, log = submit(env, d, tmp_path, "slurm_one_node", rounds=20, checkpoint_every=0)
    assert wait_for(lambda: job_field(env, job, "JobState") in ("COMPLETED", "FAILED", "CANCELLED"), 150), (
        f"job {job} did not finish: {job_field(env, job, 'JobState')}; {tail(log)}"
    )
    assert job_field(env, job, "JobState") == "COMPLETED", tail(log, 10)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["mode"] == "mpi" and summary["world_size"] == 3 and summary["rounds"] == 20
    assert "mpirun -n 3" in log.read_text()


def test_time_limit_signal_requeues_and_the_next_start_resumes(cluster, tmp_path):
    env, d = cluster
    rounds = 400
    # no periodic checkpoint: all a requeue can resume from is the one written on the signal
    job, run_dir, log = submit(env, d, tmp_path, "slurm_requeue", rounds=rounds, checkpoint_every=0)
    logged = run_dir / "rounds.jsonl"
    assert wait_for(lambda: logged.exists() and len(logged.read_text().splitlines()) >= 10, 90, 0.5), tail(log)
    assert run(["scancel", "--batch", "--signal=USR1", job], env=env).returncode == 0
    assert wait_for(lambda: job_field(env, job, "Restarts") == "1", 60), tail(log)
    assert "requeueing job" in log.read_text()
    assert wait_for(lambda: resumed(env, job, log), 180), f"not restarted: {job_field(env, job, 'Reason')}"
    assert wait_for(lambda: (run_dir / "summary.json").exists(), 120), tail(log)
    text = log.read_text()
    assert "--resume" in text
    stopped_after = int(text.split("stopped by SIGUSR1 after round ")[1].split(";")[0])
    assert f"resuming {run_dir} at round {stopped_after + 1}" in text  # no finished round is run again
    rounds_logged = [json.loads(line)["round"] for line in (run_dir / "rounds.jsonl").read_text().splitlines()]
    assert rounds_logged == list(range(rounds))
    assert json.loads((run_dir / "summary.json").read_text())["rounds"] == rounds


def test_sweep_refuses_an_index_without_a_config(tmp_path):
    result = run(
        ["bash", "launch/sweep.sbatch", str(tmp_path / "*.toml")],
        cwd=ROOT,
        env={**os.environ, "SLURM_ARRAY_TASK_ID": "0"},
    )
    assert result.returncode == 2 and "array index 0: no config" in result.stderr


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "launch").iterdir()))
def test_launch_scripts_parse(script):
    assert run(["bash", "-n", str(ROOT / "launch" / script)]).returncode == 0
