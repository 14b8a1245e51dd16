"""Config of the puzzle HRM (ACT v1, the HRM paper's model) and its named presets."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass
class HRMACTv1Config:
    name: str = "hrm_act_v1"
    loss_type: str = "stablemax_cross_entropy"  # stablemax_cross_entropy | softmax_cross_entropy

    # Filled from the dataset's dataset.json.
    vocab_size: int = 0
    seq_len: int = 0
    num_puzzle_identifiers: int = 1
    puzzle_emb_ndim: int = 512          # 0 disables the puzzle embedding prefix

    h_cycles: int = 2
    l_cycles: int = 2
    h_layers: int = 4
    l_layers: int = 4

    d_model: int = 512
    mlp_ratio: float = 4.0
    n_heads: int = 8
    pos_encodings: str = "rope"         # rope | learned
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0

    halt_max_steps: int = 16
    halt_exploration_prob: float = 0.1

    one_step_grad: bool = True          # False: backprop through the whole last H cycle
    use_gating: bool = False
    gate_hidden_ratio: float = 0.25
    gate_init_bias: float = -2.2        # sigmoid(-2.2) ~ 0.1: gates start ~10% open
    # Gate regularisation: gate_reg_weight x the H and L gates' squared distance outside gate_reg_band (0: off)
    gate_reg_weight: float = 0.0
    gate_reg_band: list[float] = field(default_factory=lambda: [0.1, 0.9])

    # The paper's names -> fields (command-line flags and YAML keys of the HRM paper's configs).
    ALIASES: ClassVar[dict[str, str]] = {
        "H_cycles": "h_cycles", "L_cycles": "l_cycles", "H_layers": "h_layers", "L_layers": "l_layers",
        "hidden_size": "d_model", "num_heads": "n_heads", "expansion": "mlp_ratio", "rms_norm_eps": "norm_eps",
    }
    # Fields that are initial values of parameters: `train.init_values` applies them over --init_from weights.
    INIT_VALUES: ClassVar[tuple[str, ...]] = ("gate_init_bias",)

    @property
    def puzzle_emb_len(self) -> int:
        """Prefix positions the puzzle embedding occupies: ceil(puzzle_emb_ndim / d_model)."""
        return -(self.puzzle_emb_ndim // -self.d_model)

    @property
    def prefix_len(self) -> int:
        """The puzzle-embedding prefix positions (the HRM's rule: always the ceiling above)."""
        return self.puzzle_emb_len

    def validate(self) -> HRMACTv1Config:
        need = check_puzzle_model(self, ("h_cycles", "l_cycles", "h_layers", "l_layers", "d_model", "n_heads",
                                         "halt_max_steps"))
        need(self.pos_encodings in ("rope", "learned"), f"pos_encodings must be rope or learned, got {self.pos_encodings!r}")
        need(0.0 <= self.halt_exploration_prob <= 1.0, "halt_exploration_prob must be in [0, 1]")
        need(self.gate_hidden_ratio > 0, "gate_hidden_ratio must be positive")
        return self


# Named presets of this family: preset name -> field values over the defaults (hrm_ray.models.registry).
PRESETS: dict[str, dict[str, Any]] = {
    "hrm_v1": {},
    "hrm_v1_gated": {"use_gating": True},
}


def check_puzzle_model(c: Any, counts: tuple[str, ...]) -> Callable[[bool, str], None]:
    """The checks every puzzle model's config shares (its data fields, `counts` >= 1, heads dividing d_model);
    returns the `need(ok, message)` a family's own checks go on with (a ValueError naming the field)."""
    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise ValueError(f"model config: {msg}")
    need(c.vocab_size > 0, f"vocab_size must be positive (take it from dataset.json), got {c.vocab_size}")
    need(c.seq_len > 0, f"seq_len must be positive (take it from dataset.json), got {c.seq_len}")
    need(c.num_puzzle_identifiers > 0, "num_puzzle_identifiers must be positive")
    need(c.puzzle_emb_ndim >= 0, "puzzle_emb_ndim must be >= 0")
    for k in counts:
        need(getattr(c, k) >= 1, f"{k} must be >= 1, got {getattr(c, k)}")
    need(c.d_model % c.n_heads == 0, f"d_model {c.d_model} must be divisible by n_heads {c.n_heads}")
    return need
