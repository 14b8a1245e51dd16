"""HRM x LM hybrid: prompt encoder -> HRM core -> gated bridge -> causal decoder with a tied LM head.

    E      = Encoder(embed(encoder_ids))                      prompt states, padding masked
    z_H    = HRM(E)                                            h_cycles x (l_cycles L-updates, 1 H-update)
    memory = Bridge(E, z_H, g * gate_scale)                    residual or gated prefix
    logits = lm_head(Decoder(embed(decoder_input_ids), memory))

With the gate scale at 0 the memory is E: a plain encoder-decoder LM that still reads the prompt.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from hrm_ray.models.hrm_lm.bridge import Bridge, memory_bias
from hrm_ray.models.hrm_lm.config import HRMLMConfig
from hrm_ray.models.hrm_lm.decoder import Decoder
from hrm_ray.models.hrm_lm.diagnostics import halt_stats, halting_distribution
from hrm_ray.models.hrm_lm.encoder import Encoder
from hrm_ray.models.hrm_lm.hrm_core import HRMCore
from hrm_ray.models.hrm_lm.mamba2 import MAMBA_SSM_PATH
from hrm_ray.models.hrm_lm.sampling import next_token
from hrm_ray.models.layers import bridge_gate_stats, gate_band_penalty

logger = logging.getLogger(__name__)
IGNORE_INDEX = -100


@dataclass
class ModelOutput:
    logits: torch.Tensor  # [B, T, V]
    loss: torch.Tensor  # ce + ds_weight * deep_supervision + halting
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    diagnostics: dict[str, torch.Tensor] = field(default_factory=dict)
    num_tokens: torch.Tensor | None = None  # 0-dim long: labels != -100
    gate: torch.Tensor | None = None  # [B] effective gate per example (None without the HRM)


@dataclass
class GenerationResult:
    tokens: torch.Tensor  # [B, <= max_new_tokens], eos after a sequence finished
    lengths: torch.Tensor  # [B] tokens before the first eos
    cycles_used: torch.Tensor  # [B] HRM cycles each prompt used (0 without the HRM)


class HRMLanguageModel(nn.Module):
    def __init__(self, cfg: HRMLMConfig) -> None:
        super().__init__()
        self.cfg = cfg.validate()
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.encoder = Encoder(cfg)
        self.hrm = HRMCore(cfg) if cfg.hrm.enabled else None
        self.bridge = Bridge(cfg) if cfg.hrm.enabled else None
        self.decoder = Decoder(cfg)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.embed.weight
        self.loss_fn = token_cross_entropy  # an attribute, so that --compile can swap in a compiled one
        self.apply(_init_weights)
        if self.hrm is not None and self.hrm.halt_head is not None:  # p = sigmoid(halt_init_bias) a cycle at the start
            nn.init.zeros_(self.hrm.halt_head.weight)
        self.apply_initial_values(cfg.INIT_VALUES)

    @property
    def config(self) -> HRMLMConfig:
        """The model's config under the name every family's model gives it (hrm_ray.models.registry)."""
        return self.cfg

    def apply_initial_values(self, names: Iterable[str]) -> dict[str, float]:
        """Set the parameters that the config's initial-value fields `names` (of INIT_VALUES) start, over any
        loaded weights: the gate's bias, the halting head's bias. -> name: value, of each one the model has."""
        applied: dict[str, float] = {}
        for name in names:
            if name not in self.cfg.INIT_VALUES:
                raise ValueError(f"{name}: not an initial value of this model ({', '.join(self.cfg.INIT_VALUES)})")
            if name == "bridge.gate_init_bias" and self.bridge is not None:
                self.bridge.gate.reset_bias()
                applied[name] = self.cfg.bridge.gate_init_bias
            elif name == "hrm.halt_init_bias" and self.hrm is not None and self.hrm.halt_head is not None:
                nn.init.constant_(self.hrm.halt_head.bias, self.cfg.hrm.halt_init_bias)
                applied[name] = self.cfg.hrm.halt_init_bias
        return applied

    def hrm_parameters(self) -> list[nn.Parameter]:
        """Parameters of the HRM path (core, bridge projection, gate): frozen while the gate scale is 0."""
        if self.hrm is None:
            return []
        return [*self.hrm.parameters(), *self.bridge.parameters()]

    def encode(self, encoder_ids: torch.Tensor, encoder_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.embed(encoder_ids), encoder_mask)

    def _logits(self, decoder_input: torch.Tensor, memory: torch.Tensor, bias: torch.Tensor,
                start_pos: int = 0, caches: list | None = None) -> torch.Tensor:
        if self.cfg.aligned_memory:
            decoder_input = decoder_input + aligned_read(memory, bias, start_pos, decoder_input.shape[1])
        return self.lm_head(self.decoder(decoder_input, memory, bias, start_pos=start_pos, caches=caches))

    def forward(self, batch: dict[str, torch.Tensor], gate_scale: float | torch.Tensor = 1.0) -> ModelOutput:
        """Loss = token-mean CE (+ ds_weight * deep_supervision + halting when enabled).

        With halting the CE term is ACT's: each cycle's answer weighted by the probability of halting
        there (`halting_distribution`), so every cycle adaptive inference may stop at is trained; "ce"
        stays the last cycle's (what inference with all cycles reads). Decoder padding is on the right
        and its labels are -100, so causal attention alone keeps real positions from seeing it.
        Diagnostics: gate_* always with the HRM; halt_sum_* only with halting; cycles_used always."""
        enc_mask = batch["encoder_mask"].bool()
        labels = batch["labels"]
        E = self.encode(batch["encoder_ids"], enc_mask)
        dec_in = self.embed(batch["decoder_input_ids"])
        num_tokens = (labels != IGNORE_INDEX).sum()
        if self.hrm is None:
            logits = self._logits(dec_in, E, memory_bias(enc_mask, E.dtype))
            ce = self.loss_fn(logits, labels, num_tokens)
            return ModelOutput(logits, ce, {"ce": ce}, {"cycles_used": E.new_zeros((), dtype=torch.float32)},
                               num_tokens)

        h = self.cfg.hrm
        thought = self.hrm(E, enc_mask)
        memory, bias, gate, gate_eff = self.bridge(E, enc_mask, thought.final, gate_scale)
        logits = self._logits(dec_in, memory, bias)
        ce = self.loss_fn(logits, labels, num_tokens)
        losses, extra = {"ce": ce}, ce.new_zeros(())
        earlier = ([self._logits(dec_in, *self.bridge(E, enc_mask, z, gate_scale)[:2]) for z in thought.z_H[:-1]]
                   if h.deep_supervision or thought.halt_probs is not None else [])
        if h.deep_supervision:
            per_cycle = [self.loss_fn(cycle_logits, labels, num_tokens) for cycle_logits in earlier]
            losses["deep_supervision"] = torch.stack(per_cycle).mean() if per_cycle else ce.new_zeros(())
            extra = extra + h.ds_weight * losses["deep_supervision"]
        diagnostics = {**bridge_gate_stats(gate_eff), "gate_raw_mean": gate.detach().mean()}
        if self.cfg.bridge.gate_reg_weight > 0:
            losses["gate_reg"] = gate_band_penalty(gate.float().mean(), self.cfg.bridge.gate_reg_band)
            extra = extra + self.cfg.bridge.gate_reg_weight * losses["gate_reg"]
        if thought.halt_probs is not None:
            weights = halting_distribution(thought.halt_probs)
            sums = torch.stack([example_ce_sums(x, labels) for x in [*earlier, logits]], dim=1)  # [B, C]
            losses["act"] = (weights * sums).sum() / num_tokens.clamp_min(1)
            halt_sum = thought.halt_probs.sum(-1)
            losses["halting"] = (h.halting_weight * gate_eff.detach().mean()
                                 * (halt_sum - h.halt_target).pow(2).mean())
            extra = extra + losses["halting"]
            diagnostics.update(halt_stats(thought.halt_probs, h.halt_threshold))
        else:
            diagnostics["cycles_used"] = torch.full((), float(h.h_cycles), device=E.device)
        loss = losses.get("act", ce) + extra
        return ModelOutput(logits, loss, losses, diagnostics, num_tokens, gate_eff.detach())

    @torch.no_grad()
    def generate(
        self,
        encoder_ids: torch.Tensor,
        encoder_mask: torch.Tensor,
        max_new_tokens: int,
        *,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        eos_id: int | None = 2,
        bos_id: int = 1,
        use_cache: bool = True,
        adaptive_halting: bool = True,
        generator: torch.Generator | None = None,
        gate_scale: float = 1.0,
    ) -> GenerationResult:
        """Decode up to `max_new_tokens` per prompt (greedy when temperature is 0). The prompt is
        encoded and the HRM run once; `use_cache=False` recomputes the whole decoder every step."""
        was_training = self.training
        self.eval()
        try:
            return self._generate(encoder_ids, encoder_mask.bool(), max_new_tokens, temperature, top_k, top_p,
                                  eos_id, bos_id, use_cache, adaptive_halting, generator, gate_scale)
        finally:
            self.train(was_training)

    def _generate(self, encoder_ids, encoder_mask, max_new_tokens, temperature, top_k, top_p, eos_id, bos_id,
                  use_cache, adaptive_halting, generator, gate_scale) -> GenerationResult:
        batch = encoder_ids.shape[0]
        E = self.encode(encoder_ids, encoder_mask)
        if self.hrm is None:
            memory, bias = E, memory_bias(encoder_mask, E.dtype)
            cycles_used = torch.zeros(batch, dtype=torch.long, device=E.device)
        else:
            thought = self.hrm(E, encoder_mask, adaptive=adaptive_halting)
            memory, bias, _, _ = self.bridge(E, encoder_mask, thought.final, gate_scale)
            cycles_used = thought.cycles_used
        tokens = torch.full((batch, 1), bos_id, dtype=torch.long, device=E.device)
        finished = torch.zeros(batch, dtype=torch.bool, device=E.device)
        caches = self.decoder.new_caches(batch, max_new_tokens, E) if use_cache else None
        for step in range(max_new_tokens):
            if use_cache:
                logits = self._logits(self.embed(tokens[:, -1:]), memory, bias, start_pos=step, caches=caches)
            else:
                logits = self._logits(self.embed(tokens), memory, bias)
            choice = next_token(logits[:, -1].float(), temperature, top_k, top_p, generator)
            if eos_id is not None:
                choice = torch.where(finished, eos_id, choice)
                finished = finished | (choice == eos_id)
            tokens = torch.cat((tokens, choice[:, None]), dim=1)
            if eos_id is not None and bool(finished.all()):
                break
        generated = tokens[:, 1:]
        if eos_id is None:
            lengths = torch.full((batch,), generated.shape[1], dtype=torch.long, device=E.device)
        else:
            lengths = (generated != eos_id).long().cumprod(-1).sum(-1)
        return GenerationResult(generated, lengths, cycles_used)


def aligned_read(memory: torch.Tensor, bias: torch.Tensor, start: int, length: int) -> torch.Tensor:
    """Memory positions start..start+length-1 for decoder positions start.. (zeros past the memory and at
    padding): decoder position t predicts label t, which labels encoder position t in a label-per-cell task."""
    read = memory[:, start:start + length] * (bias[:, start:start + length, None] == 0).to(memory.dtype)
    missing = length - read.shape[1]
    return F.pad(read, (0, 0, 0, missing)) if missing > 0 else read


def example_ce_sums(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[B] cross-entropy summed over each example's labels != -100."""
    ce = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX,
                         reduction="none")
    return ce.view(labels.shape).sum(-1)


def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, num_tokens: torch.Tensor) -> torch.Tensor:
    """Token-mean cross-entropy over labels != -100 (`num_tokens` of them)."""
    total = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX,
                            reduction="sum")
    return total / num_tokens.clamp_min(1)


def compile_units(model: HRMLanguageModel) -> list[str]:
    """`--compile`'s units (hrm_ray.train.compile): the encoder (unless mamba_ssm's kernels run it), the decoder,
    and the recurrent L and H steps and the bridge of the HRM core that every cycle reuses."""
    units = ["decoder"]
    if model.encoder.kernel_path.endswith(MAMBA_SSM_PATH):
        logger.info("torch.compile: the encoder runs mamba_ssm's kernels and is left uncompiled")
    else:
        units.insert(0, "encoder")
    if model.hrm is not None:
        units += ["hrm.L", "hrm.H", "bridge"]
    return units


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
