"""The method interface: a pure worker rule and a pure server rule over flat tensors and messages.

One round t:
  server -> every worker: the downlink messages (round 0: the initial model)
  worker i: ``worker_step`` reads the downlink, queries its gradient oracle, returns uplink messages
  server:   ``server_step`` reads the mean (or sum) of the uplinks, part by part, returns the next downlink
            (the runtime accumulates each uplink as it lands, in rank order: runtime/aggregate.py)
The runtime moves messages (MPI or in-process) and counts their bytes; a method never
sees MPI, files or models, so the same rules run everywhere.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass, replace

import torch

from psgd.compress import Compressor, Message, make, with_layers
from psgd.methods.options import THEORY, MethodOptions
from psgd.methods.theory import Constants
from psgd.seeding import generator

Oracle = Callable[..., torch.Tensor]
"""oracle(x, sample=0) -> stochastic gradient of the worker's loss at x (flat tensor).
Different ``sample`` values draw different minibatches within a round."""


@dataclass(frozen=True)
class Context:
    """Where a rule runs: round, rank (0 = server, 1..n workers), worker count, seed, device."""

    round: int
    rank: int
    n: int
    seed: int
    device: torch.device

    def rng(self, purpose: str, shared: bool = False) -> torch.Generator:
        """CPU generator for (seed, rank, round, purpose); shared=True gives every rank the same one."""
        return generator(self.seed, -1 if shared else self.rank, self.round, purpose)


class Method(ABC):
    """An algorithm of SPEC section 3. Subclasses say in their docstring what crosses the wire."""

    name: str
    Options: type[MethodOptions] = MethodOptions
    # True: server_step's up[j] is the sum sum_i C(part j of worker i), which the rule divides by
    # ctx.n in its own first pass over it (no pass of the runtime's for the mean); False: the mean
    reads_sums: bool = False

    def __init__(self, options: MethodOptions, constants: Constants | None = None) -> None:
        """``constants`` (n, d, and L, mu when the task knows them) is None only when a config
        is validated before any task exists; checks that need the task are skipped then."""
        self.options = options
        self.constants = constants
        self.decay_mask: torch.Tensor | None = None  # set by build() from the task (decay_norm_and_bias = false)
        self.uplink: Compressor = make(options.uplink)
        self.downlink: Compressor = make(options.downlink)
        self.check()
        if constants is not None and (options.lr == THEORY or options.strict_theory):
            self.check_theory()

    def scratch(self, like: torch.Tensor) -> torch.Tensor:
        """A buffer shaped like ``like`` that this node's rule reuses every round, for a value it
        needs within one step only (the decoded downlink): a fresh d-vector costs page faults."""
        key = (like.shape, like.dtype, like.device)
        buffers = self.__dict__.setdefault("_scratch", {})
        if key not in buffers:
            buffers[key] = torch.empty_like(like)
        return buffers[key]

    def use_layers(self, sizes: list[int]) -> None:
        """Give the model's layer sizes to this method's compressors (see compress.with_layers)."""
        for name, value in vars(self).items():
            if isinstance(value, Compressor):
                setattr(self, name, with_layers(value, sizes))

    def check(self) -> None:
        """Refuse incompatible options with a ValueError that says why."""

    def require_dense_downlink(self) -> None:
        """For methods whose server broadcasts one dense fp32 vector (their theorems assume it)."""
        if self.downlink.name != "identity":
            raise ValueError(
                f"{self.name}: the downlink must be identity (the method broadcasts a dense fp32 vector); "
                f"got {self.downlink.spec!r}. For a compressed downlink use ef14, doublesqueeze or liec"
            )

    def theory_lr(self) -> tuple[float, str]:
        """(the largest step size the method's theorem allows for ``self.constants``, the
        theorem and its formula with the numbers); ValueError when no theorem applies."""
        raise ValueError(f"{self.name}: no theorem step size is implemented; give method.lr as a number")

    def check_theory(self) -> None:
        """Resolve lr = 'theory'; with strict_theory, refuse a step size above the theorem's bound."""
        o = self.options
        if o.momentum or o.weight_decay:
            raise ValueError(
                f"{self.name}: the theorems assume plain steps; lr = 'theory' and strict_theory "
                "need momentum = weight_decay = 0"
            )
        bound, why = self.theory_lr()
        if o.lr == THEORY:
            self.options = replace(o, lr=bound)
        elif o.lr > bound * (1 + 1e-12):
            raise ValueError(
                f"{self.name}: lr = {o.lr:g} is above the theorem's bound {bound:.6g} ({why}); "
                "use lr = 'theory', a smaller lr, or strict_theory = false"
            )

    # --- codecs of each round's parts (the receiver parses bytes with them) ---
    def uplink_codecs(self, round: int) -> list[Compressor]:
        return [self.uplink]

    def downlink_codecs(self, round: int) -> list[Compressor]:
        return [self.downlink]

    def init_codecs(self) -> list[Compressor]:
        """Codecs of the round-0 downlink that ships the initial model."""
        return [make("identity")]

    # --- the rules ---
    @abstractmethod
    def server_init(self, x0: torch.Tensor, ctx: Context) -> tuple[object, list[Message]]:
        """Server state and the round-0 downlink (usually the initial model, uncompressed)."""

    @abstractmethod
    def worker_init(self, init: list[torch.Tensor], ctx: Context) -> object:
        """Worker state from the decoded round-0 downlink."""

    @abstractmethod
    def worker_step(self, state, down: list[torch.Tensor], oracle: Oracle, ctx: Context) -> list[Message]:
        """Apply the decoded downlink, compute gradients, return the uplink messages."""

    @abstractmethod
    def server_step(self, state, up: list[torch.Tensor], ctx: Context) -> list[Message]:
        """From up[j] = (1/n) sum_i C(part j of worker i), or the sum where ``reads_sums`` (buffers
        the runtime reuses next round: read or overwrite them, do not keep them), update the state;
        return the next downlink."""

    def local_models(self, round: int) -> bool:
        """True when, after ``round``, the workers' models differ from each other and from the
        server's (local-model methods between syncs). Evaluation then scores their average,
        (1/n) sum_i x_i, as the papers do, fetched outside the byte ledger (``worker_model``)."""
        return False

    def worker_model(self, state, down: list[torch.Tensor], ctx: Context) -> torch.Tensor:
        """The worker's model once it applies ``down`` (the downlink the server built in round
        ctx.round - 1), leaving ``state`` as it is. Methods with local models implement
        ``apply_downlink(state, down, ctx)``."""
        copy = deepcopy(state)
        self.apply_downlink(copy, down, ctx)  # type: ignore[attr-defined]
        return copy.x

    @abstractmethod
    def server_model(self, state) -> torch.Tensor:
        """The model the server evaluates and checkpoints."""
