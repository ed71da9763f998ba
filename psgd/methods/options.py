"""Options every method shares; a method with more subclasses this dataclass."""

from __future__ import annotations

from dataclasses import dataclass, field

THEORY = "theory"  # method.lr = "theory": the step size of the method's theorem (see Method.theory_lr)


@dataclass(frozen=True)
class MethodOptions:
    name: str = "ef14"
    uplink: str = "identity"  # compressor spec for worker -> server
    downlink: str = "identity"  # compressor spec for server -> worker
    lr: float | str = 0.1  # a number, or "theory" (resolved from the task's constants by methods.build)
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    decay_norm_and_bias: bool = True  # false: no weight decay on 1-D tensors (biases, norm scales), as Goyal et al.
    lr_milestones: list[int] = field(default_factory=list)  # rounds at which lr *= lr_gamma
    lr_gamma: float = 0.1
    lr_warmup: int = 0  # rounds of linear warm-up from lr_warmup_start to lr (Goyal et al.; Sahu et al. use 5 epochs)
    lr_warmup_start: float = 0.0
    strict_theory: bool = False  # refuse an lr above the bound of the method's theorem

    def lr_at(self, round: int) -> float:
        if isinstance(self.lr, str):
            raise ValueError("method.lr = 'theory' is unresolved: build the method with a task that knows L and mu")
        lr = self.lr * self.lr_gamma ** sum(round >= m for m in self.lr_milestones)
        if round < self.lr_warmup:
            return self.lr_warmup_start + (lr - self.lr_warmup_start) * round / self.lr_warmup
        return lr

    def __post_init__(self) -> None:
        if isinstance(self.lr, str):
            if self.lr != THEORY:
                raise ValueError(f"method.lr must be a number > 0 or {THEORY!r}, got {self.lr!r}")
        elif not self.lr > 0:
            raise ValueError(f"method.lr must be > 0, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"method.momentum must be in [0, 1), got {self.momentum}")
        if self.lr_warmup < 0 or self.lr_warmup_start < 0:
            raise ValueError(
                f"method.lr_warmup and lr_warmup_start must be >= 0, got {self.lr_warmup}, {self.lr_warmup_start}"
            )
        if not isinstance(self.lr, str) and self.lr_warmup and self.lr_warmup_start > self.lr:
            raise ValueError(f"method.lr_warmup_start = {self.lr_warmup_start} is above lr = {self.lr}: warm-up rises")
        if self.weight_decay < 0:
            raise ValueError(f"method.weight_decay must be >= 0, got {self.weight_decay}")
