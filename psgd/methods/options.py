"""Options every method shares; a method with more subclasses this dataclass."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class MethodOptions:
    name: str = "ef14"
    uplink: str = "identity"  # compressor spec for worker -> server
    downlink: str = "identity"  # compressor spec for server -> worker
    lr: float = 0.1
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    lr_milestones: list[int] = field(default_factory=list)  # rounds at which lr *= lr_gamma
    lr_gamma: float = 0.1

    def lr_at(self, round: int) -> float:
        return self.lr * self.lr_gamma ** sum(round >= m for m in self.lr_milestones)

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"method.lr must be > 0, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"method.momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise ValueError(f"method.weight_decay must be >= 0, got {self.weight_decay}")
