"""The byte ledger: every frame handed to or taken from the transport, per worker and
direction, header and body apart. Totals include set-up and shut-down frames."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Counts:
    """Bytes per worker (index 0 is worker 1)."""

    total: list[int]
    header: list[int]

    @classmethod
    def zeros(cls, n: int) -> Counts:
        return cls([0] * n, [0] * n)

    def add(self, worker: int, nbytes: int, header: int) -> None:
        self.total[worker - 1] += nbytes
        self.header[worker - 1] += header


@dataclass
class Ledger:
    n: int
    up: Counts = field(init=False)
    down: Counts = field(init=False)
    round_up: Counts = field(init=False)
    round_down: Counts = field(init=False)

    def __post_init__(self) -> None:
        self.up, self.down = Counts.zeros(self.n), Counts.zeros(self.n)
        self.new_round()

    def new_round(self) -> None:
        self.round_up, self.round_down = Counts.zeros(self.n), Counts.zeros(self.n)

    def sent(self, worker: int, nbytes: int, header: int) -> None:
        self.down.add(worker, nbytes, header)
        self.round_down.add(worker, nbytes, header)

    def received(self, worker: int, nbytes: int, header: int) -> None:
        self.up.add(worker, nbytes, header)
        self.round_up.add(worker, nbytes, header)

    def round_record(self) -> dict:
        return {
            "bytes_up": list(self.round_up.total),
            "bytes_down": list(self.round_down.total),
            "header_up": list(self.round_up.header),
            "header_down": list(self.round_down.header),
        }

    def state(self) -> dict:
        return {"up": vars(self.up), "down": vars(self.down)}
