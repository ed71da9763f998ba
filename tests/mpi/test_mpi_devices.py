"""Each worker's GPU slot is its index among the workers on its machine (one machine here)."""

import numpy as np
import pytest
from mpi4py import MPI

from psgd.runtime import devices


@pytest.mark.mpi(min_size=2)
def test_local_slots_number_the_workers_of_a_machine():
    comm = MPI.COMM_WORLD
    slots = np.zeros(comm.Get_size(), dtype=np.int64)
    comm.Allgather(np.array([devices.local_slot(comm)], dtype=np.int64), slots)
    assert slots.tolist() == [0, *range(comm.Get_size() - 1)]
