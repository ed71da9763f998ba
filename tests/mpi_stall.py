"""Test harness: a psgd job under MPI whose worker 2 stalls in round 3.

PSGD_STALL picks how: sleep (it sleeps 120 s before sending its uplink), stop (it sends itself
SIGSTOP, as `kill -STOP` from outside would), server (the server sleeps before round 3's downlink).
"""

import os
import signal
import sys
import time

from psgd.runtime import transport
from psgd.train import main
from psgd.wire.frame import Kind, decode_frame

HOW = os.environ.get("PSGD_STALL", "sleep")


def stalls(frame) -> bool:
    """The frame before which this rank goes silent."""
    if HOW == "server":
        return frame.kind == Kind.DOWN and frame.round == 3
    return frame.kind == Kind.UP and frame.round == 3 and frame.sender == 2


class Stalling(transport.MPITransport):
    def send(self, dest, data):
        if stalls(decode_frame(data, sender=self.comm.Get_rank(), round=None)):
            if HOW == "stop":
                os.kill(os.getpid(), signal.SIGSTOP)
            time.sleep(120)
        super().send(dest, data)


transport.MPITransport = Stalling
sys.exit(main(sys.argv[1:]))
