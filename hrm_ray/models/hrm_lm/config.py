"""Config of the HRM x LM hybrid (`hrm_lm`): the model section with its encoder, HRM and bridge parts."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar


@dataclass
class MambaConfig:
    d_state: int = 64
    d_conv: int = 4
    expand: int = 2
    headdim: int = 32
    chunk_size: int = 64


@dataclass
class HRMConfig:
    enabled: bool = True
    h_cycles: int = 2
    l_cycles: int = 2                   # L-updates per H-cycle
    h_layers: int = 1
    l_layers: int = 1
    one_step_grad: bool = True
    deep_supervision: bool = False
    ds_weight: float = 0.1
    use_halting: bool = False
    halting_weight: float = 0.005
    halt_target: float = 1.0
    halt_threshold: float = 0.5         # inference stops once the halting distribution's mass reaches this
    halt_init_bias: float = -2.0        # the halting head's initial bias (weights start at 0): p = sigmoid(bias)


@dataclass
class BridgeConfig:
    mode: str = "residual"              # residual | prefix
    prefix_tokens: int = 4
    gate_init_bias: float = -2.2
    gate_hidden_ratio: float = 0.25
    # Gate regularisation (the gated-HRM document's Phase 2, with the sign that keeps gates unsaturated):
    # gate_reg_weight x (distance of the batch's mean raw gate outside gate_reg_band)^2; 0: off.
    gate_reg_weight: float = 0.0
    gate_reg_band: list[float] = field(default_factory=lambda: [0.1, 0.9])


@dataclass
class HRMLMConfig:
    name: str = "hrm_lm"
    vocab_size: int = 0                 # set from the tokenizer
    d_model: int = 256
    n_heads: int = 4
    encoder_layers: int = 2
    decoder_layers: int = 2
    encoder_backend: str = "transformer"  # transformer | mamba2
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    aligned_memory: bool = False        # label-per-cell tasks: decoder position t also reads memory position t
    mamba: MambaConfig = field(default_factory=MambaConfig)
    hrm: HRMConfig = field(default_factory=HRMConfig)
    bridge: BridgeConfig = field(default_factory=BridgeConfig)

    # Former names -> dotted field paths in this config (command-line flags and YAML keys of old runs).
    ALIASES: ClassVar[dict[str, str]] = {"l_steps": "hrm.l_cycles"}
    # Fields that are initial values of parameters: `train.init_values` applies them over --init_from weights.
    INIT_VALUES: ClassVar[tuple[str, ...]] = ("bridge.gate_init_bias", "hrm.halt_init_bias")

    def validate(self) -> HRMLMConfig:
        if self.vocab_size <= 0:
            raise ValueError(f"model.vocab_size must be > 0 (set it from the tokenizer), got {self.vocab_size}")
        if self.d_model % self.n_heads:
            raise ValueError(f"model.d_model ({self.d_model}) must be divisible by model.n_heads ({self.n_heads})")
        return self
