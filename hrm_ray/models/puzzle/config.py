"""The fields, paper aliases and checks every puzzle family's config shares (`PuzzleModelConfig`)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar


@dataclass
class PuzzleModelConfig:
    """A puzzle model's data fields, sizes, positions and halting; a family's config derives from it, sets
    `name` and the defaults it wants, and adds its own fields."""
    name: str = ""
    loss_type: str = "stablemax_cross_entropy"  # stablemax_cross_entropy | softmax_cross_entropy

    # Filled from the dataset's dataset.json.
    vocab_size: int = 0
    seq_len: int = 0
    num_puzzle_identifiers: int = 1
    puzzle_emb_ndim: int = 512          # 0 disables the puzzle embedding prefix

    h_cycles: int = 2
    l_cycles: int = 2
    l_layers: int = 4

    d_model: int = 512
    mlp_ratio: float = 4.0
    n_heads: int = 8
    pos_encodings: str = "rope"         # one of POS_ENCODINGS
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0

    halt_max_steps: int = 16
    halt_exploration_prob: float = 0.1

    # The papers' names -> fields (command-line flags and YAML keys of the HRM and TRM papers' configs).
    ALIASES: ClassVar[dict[str, str]] = {
        "H_cycles": "h_cycles", "L_cycles": "l_cycles", "L_layers": "l_layers", "hidden_size": "d_model",
        "num_heads": "n_heads", "expansion": "mlp_ratio", "rms_norm_eps": "norm_eps",
    }
    # Fields that are initial values of parameters: `train.init_values` applies them over --init_from weights.
    INIT_VALUES: ClassVar[tuple[str, ...]] = ()
    POS_ENCODINGS: ClassVar[tuple[str, ...]] = ("rope", "learned")

    @property
    def prefix_len(self) -> int:
        """Prefix positions the puzzle embedding occupies: ceil(puzzle_emb_ndim / d_model)."""
        return -(self.puzzle_emb_ndim // -self.d_model)

    def checks(self, counts: tuple[str, ...]) -> Callable[[bool, str], None]:
        """The checks every puzzle config shares (its data fields, `counts` >= 1, heads dividing d_model, the
        positions, the exploration probability); returns the `need(ok, message)` a family's own checks go on
        with (a ValueError naming the field)."""
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(f"model config: {msg}")
        need(self.vocab_size > 0, f"vocab_size must be positive (take it from dataset.json), got {self.vocab_size}")
        need(self.seq_len > 0, f"seq_len must be positive (take it from dataset.json), got {self.seq_len}")
        need(self.num_puzzle_identifiers > 0, "num_puzzle_identifiers must be positive")
        need(self.puzzle_emb_ndim >= 0, "puzzle_emb_ndim must be >= 0")
        for k in counts:
            need(getattr(self, k) >= 1, f"{k} must be >= 1, got {getattr(self, k)}")
        need(self.d_model % self.n_heads == 0, f"d_model {self.d_model} must be divisible by n_heads {self.n_heads}")
        choices = self.POS_ENCODINGS
        need(self.pos_encodings in choices, f"pos_encodings must be {', '.join(choices[:-1])} or {choices[-1]}, "
                                            f"got {self.pos_encodings!r}")
        need(0.0 <= self.halt_exploration_prob <= 1.0, "halt_exploration_prob must be in [0, 1]")
        return need

