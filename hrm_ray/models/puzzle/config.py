"""Config of the puzzle HRM (ACT v1) and its presets."""
from __future__ import annotations

import difflib
from dataclasses import dataclass, fields, replace


@dataclass
class HRMACTv1Config:
    # Filled from the dataset's dataset.json.
    vocab_size: int = 0
    seq_len: int = 0
    num_puzzle_identifiers: int = 1
    puzzle_emb_ndim: int = 512          # 0 disables the puzzle embedding prefix

    H_cycles: int = 2
    L_cycles: int = 2
    H_layers: int = 4
    L_layers: int = 4

    hidden_size: int = 512
    expansion: float = 4.0
    num_heads: int = 8
    pos_encodings: str = "rope"         # rope | learned
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0

    halt_max_steps: int = 16
    halt_exploration_prob: float = 0.1

    one_step_grad: bool = True          # False: backprop through the whole last H cycle
    use_gating: bool = False
    gate_hidden_ratio: float = 0.25
    gate_init_bias: float = -2.2        # sigmoid(-2.2) ~ 0.1: gates start ~10% open

    @property
    def puzzle_emb_len(self) -> int:
        """Prefix positions the puzzle embedding occupies: ceil(puzzle_emb_ndim / hidden_size)."""
        return -(self.puzzle_emb_ndim // -self.hidden_size)

    def validate(self) -> HRMACTv1Config:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(f"model config: {msg}")
        need(self.vocab_size > 0, f"vocab_size must be positive (take it from dataset.json), got {self.vocab_size}")
        need(self.seq_len > 0, f"seq_len must be positive (take it from dataset.json), got {self.seq_len}")
        need(self.num_puzzle_identifiers > 0, "num_puzzle_identifiers must be positive")
        need(self.puzzle_emb_ndim >= 0, "puzzle_emb_ndim must be >= 0")
        for k in ("H_cycles", "L_cycles", "H_layers", "L_layers", "hidden_size", "num_heads", "halt_max_steps"):
            need(getattr(self, k) >= 1, f"{k} must be >= 1, got {getattr(self, k)}")
        need(self.hidden_size % self.num_heads == 0,
             f"hidden_size {self.hidden_size} must be divisible by num_heads {self.num_heads}")
        need(self.pos_encodings in ("rope", "learned"), f"pos_encodings must be rope or learned, got {self.pos_encodings!r}")
        need(0.0 <= self.halt_exploration_prob <= 1.0, "halt_exploration_prob must be in [0, 1]")
        need(self.gate_hidden_ratio > 0, "gate_hidden_ratio must be positive")
        return self


PRESETS: dict[str, HRMACTv1Config] = {
    "hrm_v1": HRMACTv1Config(),
    "hrm_v1_gated": HRMACTv1Config(use_gating=True),
}


def preset(name: str, **overrides) -> HRMACTv1Config:
    """A preset with field overrides; unknown names and fields are errors with a suggestion."""
    if name not in PRESETS:
        hint = difflib.get_close_matches(name, PRESETS, n=1)
        raise ValueError(f"unknown arch {name!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                         + f"; choose from {', '.join(PRESETS)}")
    names = {f.name for f in fields(HRMACTv1Config)}
    for key in overrides:
        if key not in names:
            hint = difflib.get_close_matches(key, names, n=1)
            raise ValueError(f"unknown arch field {key!r}" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    return replace(PRESETS[name], **overrides)
