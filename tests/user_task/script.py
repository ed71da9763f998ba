"""A user's training script: ``mpirun -n 3 python tests/user_task/script.py --set ...``."""

import psgd
from tests.user_task.model import make_task

if __name__ == "__main__":
    raise SystemExit(psgd.main(make_task))
