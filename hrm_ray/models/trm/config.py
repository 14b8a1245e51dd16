"""Config of the Tiny Recursive Model (TRM, Jolicoeur-Martineau 2025) and its named presets."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from hrm_ray.models.puzzle import PuzzleModelConfig


@dataclass
class TRMConfig(PuzzleModelConfig):
    """The shared puzzle fields (hrm_ray.models.puzzle), the TRM's defaults, and its own: the prefix length,
    the token mixer and the halting rule. h_cycles is T (repetitions of the latent recursion, the last one with
    gradient), l_cycles n (latent updates z <- net(x + y + z) before each answer update), l_layers the blocks
    of the one network; halt_max_steps counts improvement steps (deep supervision), carried across batches."""
    name: str = "trm"
    puzzle_emb_len: int = 16            # prefix positions (the paper's 16); 0: ceil(puzzle_emb_ndim / d_model)
    h_cycles: int = 3
    l_cycles: int = 4
    l_layers: int = 2
    token_mixer: str = "attention"      # attention | mlp (an MLP over the sequence, the paper's Sudoku net)
    # True (the paper's): halt when q_halt > 0, trained by BCE on correctness alone. False: also the
    # HRM's bootstrapped Q-continue target, halting when q_halt > q_continue.
    no_act_continue: bool = True

    ALIASES: ClassVar[dict[str, str]] = {**PuzzleModelConfig.ALIASES, "no_ACT_continue": "no_act_continue"}
    POS_ENCODINGS: ClassVar[tuple[str, ...]] = ("rope", "learned", "none")
    # Training settings this family defaults to where the config leaves them unset (hrm_ray.train.resolve).
    TRAIN_DEFAULTS: ClassVar[dict[str, Any]] = {"ema": True}

    @property
    def prefix_len(self) -> int:
        """Prefix positions the puzzle embedding occupies: none without one, else `puzzle_emb_len`, or
        ceil(puzzle_emb_ndim / d_model) where that is 0 (the reference's rule)."""
        if not self.puzzle_emb_ndim:
            return 0
        return self.puzzle_emb_len or super().prefix_len

    def validate(self) -> TRMConfig:
        need = self.checks(("h_cycles", "l_cycles", "l_layers", "d_model", "n_heads", "halt_max_steps"))
        need(self.token_mixer in ("attention", "mlp"), f"token_mixer must be attention or mlp, got {self.token_mixer!r}")
        need(not (self.token_mixer == "mlp" and self.pos_encodings == "rope"),
             "token_mixer mlp has no attention to rotate: use pos_encodings none (the paper's) or learned")
        need(self.puzzle_emb_len >= 0, f"puzzle_emb_len must be >= 0, got {self.puzzle_emb_len}")
        need(self.puzzle_emb_ndim <= self.prefix_len * self.d_model,
             f"puzzle_emb_ndim {self.puzzle_emb_ndim} does not fit puzzle_emb_len {self.puzzle_emb_len} positions "
             f"of d_model {self.d_model}")
        return self


# Named presets: the paper's networks. trm_mlp: Sudoku (MLP over the sequence, no positions, n=6);
# trm_att: Maze and ARC (attention with RoPE, n=4). Both T=3, 2 layers, 16 improvement steps.
PRESETS: dict[str, dict[str, Any]] = {
    "trm_mlp": {"token_mixer": "mlp", "pos_encodings": "none", "h_cycles": 3, "l_cycles": 6},
    "trm_att": {"token_mixer": "attention", "pos_encodings": "rope", "h_cycles": 3, "l_cycles": 4},
}
