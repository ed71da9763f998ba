"""Test harness: a psgd job under MPI whose worker 2 sends a truncated frame in round 3."""

import sys

from psgd.runtime import transport
from psgd.train import main


class Truncating(transport.MPITransport):
    sent = 0

    def send(self, dest, data):
        Truncating.sent += 1
        if self.comm.Get_rank() == 2 and Truncating.sent == 4:  # the uplinks of rounds 0..3
            data = data[:-3]
        super().send(dest, data)


transport.MPITransport = Truncating
sys.exit(main(sys.argv[1:]))
