"""Config of the Tiny Recursive Model (TRM, Jolicoeur-Martineau 2025) and its named presets."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from hrm_ray.models.hrm_act_v1.config import check_puzzle_model


@dataclass
class TRMConfig:
    name: str = "trm"
    loss_type: str = "stablemax_cross_entropy"  # stablemax_cross_entropy | softmax_cross_entropy

    # Filled from the dataset's dataset.json.
    vocab_size: int = 0
    seq_len: int = 0
    num_puzzle_identifiers: int = 1
    puzzle_emb_ndim: int = 512          # 0 disables the puzzle embedding prefix
    puzzle_emb_len: int = 16            # prefix positions (the paper's 16); 0: ceil(puzzle_emb_ndim / d_model)

    h_cycles: int = 3                   # T: repetitions of the latent recursion, the last one with gradient
    l_cycles: int = 4                   # n: latent updates z <- net(x + y + z) before each answer update
    l_layers: int = 2                   # blocks of the one network
    token_mixer: str = "attention"      # attention | mlp (an MLP over the sequence, the paper's Sudoku net)

    d_model: int = 512
    mlp_ratio: float = 4.0
    n_heads: int = 8
    pos_encodings: str = "rope"         # rope | learned | none
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0

    halt_max_steps: int = 16            # improvement steps (deep supervision), carried across batches
    halt_exploration_prob: float = 0.1
    # True (the paper's): halt when q_halt > 0, trained by BCE on correctness alone. False: also the
    # HRM's bootstrapped Q-continue target, halting when q_halt > q_continue.
    no_act_continue: bool = True

    # The TRM paper's names -> fields (its command-line flags and Hydra keys).
    ALIASES: ClassVar[dict[str, str]] = {
        "H_cycles": "h_cycles", "L_cycles": "l_cycles", "L_layers": "l_layers", "hidden_size": "d_model",
        "num_heads": "n_heads", "expansion": "mlp_ratio", "rms_norm_eps": "norm_eps",
        "no_ACT_continue": "no_act_continue",
    }
    INIT_VALUES: ClassVar[tuple[str, ...]] = ()
    # Training settings this family defaults to where the config leaves them unset (hrm_ray.train.resolve).
    TRAIN_DEFAULTS: ClassVar[dict[str, Any]] = {"ema": True}

    @property
    def prefix_len(self) -> int:
        """Prefix positions the puzzle embedding occupies: none without one, else `puzzle_emb_len`, or
        ceil(puzzle_emb_ndim / d_model) where that is 0 (the reference's rule)."""
        if not self.puzzle_emb_ndim:
            return 0
        return self.puzzle_emb_len or -(self.puzzle_emb_ndim // -self.d_model)

    def validate(self) -> TRMConfig:
        need = check_puzzle_model(self, ("h_cycles", "l_cycles", "l_layers", "d_model", "n_heads", "halt_max_steps"))
        need(self.token_mixer in ("attention", "mlp"), f"token_mixer must be attention or mlp, got {self.token_mixer!r}")
        need(self.pos_encodings in ("rope", "learned", "none"),
             f"pos_encodings must be rope, learned or none, got {self.pos_encodings!r}")
        need(not (self.token_mixer == "mlp" and self.pos_encodings == "rope"),
             "token_mixer mlp has no attention to rotate: use pos_encodings none (the paper's) or learned")
        need(0.0 <= self.halt_exploration_prob <= 1.0, "halt_exploration_prob must be in [0, 1]")
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
