"""Config of the puzzle HRM (ACT v1, the HRM paper's model) and its named presets."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from hrm_ray.models.puzzle import PuzzleModelConfig


@dataclass
class HRMACTv1Config(PuzzleModelConfig):
    """The shared puzzle fields (hrm_ray.models.puzzle) and the HRM's own: h_layers (the H module's blocks;
    l_layers is the L module's), the gradient span, the injection gates and their regularisation."""
    name: str = "hrm_act_v1"
    h_layers: int = 4

    one_step_grad: bool = True          # False: backprop through the whole last H cycle
    use_gating: bool = False
    gate_hidden_ratio: float = 0.25
    gate_init_bias: float = -2.2        # sigmoid(-2.2) ~ 0.1: gates start ~10% open
    # Gate regularisation: gate_reg_weight x the H and L gates' squared distance outside gate_reg_band (0: off)
    gate_reg_weight: float = 0.0
    gate_reg_band: list[float] = field(default_factory=lambda: [0.1, 0.9])

    ALIASES: ClassVar[dict[str, str]] = {**PuzzleModelConfig.ALIASES, "H_layers": "h_layers"}
    # Fields that are initial values of parameters: `train.init_values` applies them over --init_from weights.
    INIT_VALUES: ClassVar[tuple[str, ...]] = ("gate_init_bias",)

    @property
    def puzzle_emb_len(self) -> int:
        """Prefix positions the puzzle embedding occupies (the HRM's rule: always ceil(puzzle_emb_ndim / d_model))."""
        return self.prefix_len

    def validate(self) -> HRMACTv1Config:
        need = self.checks(("h_cycles", "l_cycles", "h_layers", "l_layers", "d_model", "n_heads", "halt_max_steps"))
        need(self.gate_hidden_ratio > 0, "gate_hidden_ratio must be positive")
        return self


# Named presets of this family: preset name -> field values over the defaults (hrm_ray.models.registry).
PRESETS: dict[str, dict[str, Any]] = {
    "hrm_v1": {},
    "hrm_v1_gated": {"use_gating": True},
}

