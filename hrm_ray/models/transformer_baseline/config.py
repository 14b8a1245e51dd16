"""Config of the puzzle transformer baseline: the HRM ACT v1 config (same embeddings, heads and block sizes)
under its own name; h_layers + l_layers blocks run once, the cycle, halting and gating fields are unused."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from hrm_ray.models.hrm_act_v1.config import HRMACTv1Config


@dataclass
class TransformerBaselineConfig(HRMACTv1Config):
    name: str = "transformer_baseline"

    ALIASES: ClassVar[dict[str, str]] = HRMACTv1Config.ALIASES
