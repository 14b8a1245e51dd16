"""`--compile`: torch.compile each model family's hot units in place.

Units, not the whole forward (as torchtitan compiles per block). Each family chooses its units beside its
model (`compile_units` of its package, named in its hrm_ray.models.registry entry): for the HRMs the
recurrent step, the L and H modules that every cycle of every segment reuses, so neither compile time nor the
number of graphs grows with the cycles; around them the encoder, bridge and decoder of the HRM×LM, the
injection gates of the puzzle HRM; the TRM's one network, reused by every recursion step; the blocks of the
transformer baseline. A loss function held as an attribute (`loss_fn`, of the HRM×LM and the puzzle loss
head) compiles too. The glue between units (the cycle loop, halting, ACT bookkeeping) stays eager.
Units compile with `fullgraph=True`: a graph break on the hot path is an error, not a silent slowdown.
Compiling the whole forward instead (cycles unrolled) measured ~7% faster steps on CPU at the demo sizes
(bench/bench_compile.py --whole), with compile work growing with the cycles.

`nn.Module.compile()` works in place: parameter names, state dicts, checkpoints, DDP and the EMA see the
same modules as in eager mode. Compilation happens on first use; `CompileReport` times it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn

from hrm_ray.models.registry import compile_units

OPTIONS: dict = {"fullgraph": True}   # torch.compile's arguments for every unit


@dataclass
class CompileReport:
    """What was compiled, and the seconds dynamo and inductor spent compiling since (all graphs, forward
    and backward, in this process)."""
    units: list[str]
    seconds: float = 0.0
    graphs: int = 0
    reported: int = 0
    _started: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        handler = torch._dynamo.callback_handler
        handler.register_start_callback(self._start)
        handler.register_end_callback(self._end)

    def _start(self, _args) -> None:
        self._started = time.perf_counter()

    def _end(self, _args) -> None:
        self.seconds += time.perf_counter() - self._started
        self.graphs += 1

    def news(self) -> str | None:
        """A line about compilations since the last call, or None when there were none."""
        if self.graphs == self.reported:
            return None
        self.reported = self.graphs
        return f"torch.compile: {self.graphs} compilations, {self.seconds:.1f} s in all"


def compile_model(model: nn.Module, **options) -> CompileReport:
    """Compile `model`'s units in place (`options` go to torch.compile, over OPTIONS)."""
    options = {**OPTIONS, **options}
    units = compile_units(model)
    for name in units:
        model.get_submodule(name).compile(**options)
    if callable(getattr(model, "loss_fn", None)):
        model.loss_fn = torch.compile(model.loss_fn, **options)
        units = [*units, "loss_fn"]
    return CompileReport([u or type(model).__name__ for u in units])
