"""The puzzle models against the papers' own code: hrm_v1 (sapientinc/HRM), trm_mlp and trm_att
(SamsungSAILMontreal/TinyRecursiveModels).

tests/reference/ holds, per family, fixed weights under the reference's parameter names and what the
reference implementation computed from them on CPU in float32 (tests/reference/README.md says how):
two supervision steps on one batch, three training steps (AdamW over every parameter, sign-SGD on the
puzzle-embedding table) and an evaluation. Here the same weights are loaded into our model and every
recorded quantity is recomputed: logits, Q logits and targets, losses, halting decisions, every
parameter's gradient, the puzzle-embedding gradient, and the weights after the training steps.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from hrm_ray.config import OptimConfig
from hrm_ray.models import registry
from hrm_ray.models.layers import rms_norm
from hrm_ray.models.puzzle import ACTLossHead
from hrm_ray.models.trm import MixerBlock
from hrm_ray.train.optim import build_optimizer
from hrm_ray.train.sign_sgd import SparseEmbeddingSignSGD

REFERENCE = Path(__file__).resolve().parent / "reference"
FAMILIES = ("hrm_v1", "trm_mlp", "trm_att")
RTOL = 1e-5            # of a tensor's largest |value|: float32 rounding, far below any change of the model
SUPERVISION_SEEDS, TRAIN_SEEDS = (10, 11), (20, 21, 22)   # the global seed before each step (ACT exploration)
EXACT = ("halted", "steps", "all_halted", "puzzle_emb_ids")
NOT_OURS = {"batch_size", "forward_dtype", "mlp_t"}       # reference-only keys (the preset sets the mixer)

# reference parameter name -> ours (the first that matches, in order)
RENAMES = [(r"embedding_weight$", "weight"), (r"self_attn\.qkv_proj", "attn.qkv"), (r"self_attn\.o_proj", "attn.out"),
           (r"gate_up_proj", "gate_up"), (r"down_proj", "down"), (r"\.mlp_t\.", ".token_mlp.")]
TRM_RENAMES = [(r"inner\.L_level\.", "inner.net."), (r"inner\.H_init", "inner.y_init"), (r"inner\.L_init", "inner.z_init")]


@pytest.fixture(autouse=True)
def own_rng(one_thread):
    """One thread, as the reference was recorded; the steps seed the global generator, so fork it."""
    with torch.random.fork_rng(devices=[]):
        yield


def our_name(family: str, name: str) -> str:
    for pattern, repl in RENAMES + (TRM_RENAMES if family.startswith("trm") else []):
        name = re.sub(pattern, repl, name)
    return name


def load(family: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict]:
    tensors = []
    for part in ("weights", "outputs"):
        with safe_open(REFERENCE / f"{family}_{part}.safetensors", "pt") as f:
            tensors.append({k: f.get_tensor(k) for k in f.keys()})
            meta = f.metadata()
    return tensors[0], tensors[1], {"config": json.loads(meta["config"]), "train": json.loads(meta["train"])}


def our_model(family: str, ref_config: dict, weights: dict[str, torch.Tensor]) -> ACTLossHead:
    config_class = registry.resolve(family)[0].config_class
    values = {config_class.ALIASES.get(k, k): v for k, v in ref_config.items() if k not in NOT_OURS}
    if family.startswith("trm"):
        values.pop("H_layers")  # "ignored" by the reference TRM
    cfg = registry.default_config(family, **values)
    assert (cfg.token_mixer == "mlp") == ref_config["mlp_t"] if family.startswith("trm") else True
    model = registry.build_model(cfg)
    model.load_state_dict({our_name(family, k): v for k, v in weights.items()}, strict=True)
    return ACTLossHead(model, loss_type="stablemax_cross_entropy")


def batch(ref: dict[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
    return {k: ref[f"batch/{i}/{k}"] for k in ("inputs", "labels", "puzzle_identifiers")}


def step(head: ACTLossHead, carry, data, seed: int, prefix: str, family: str) -> tuple[object, dict]:
    """One supervision step, as the reference's train_batch: forward, backward of the loss over the batch."""
    torch.manual_seed(seed)
    carry, loss, _, all_halted, outputs = head(carry, data, return_outputs=True)
    loss.backward()
    model = head.model
    got = {prefix + "loss": loss.detach() * data["inputs"].shape[0],   # ours is the reference's sum / batch
           prefix + "halted": carry.halted, prefix + "steps": carry.steps, prefix + "all_halted": all_halted,
           prefix + "puzzle_emb_grad": model.puzzle_emb.local.grad, prefix + "puzzle_emb_ids": model.puzzle_emb.local_ids}
    got.update({prefix + k: v for k, v in outputs.items()})
    got.update({prefix + "grad/" + name: p.grad for name, p in model.named_parameters()})
    return carry, got


def zero(head: ACTLossHead) -> None:
    for p in head.model.parameters():
        p.grad = None


def recompute(family: str, decay_1d: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(reference outputs with our parameter names, the same quantities from our model)."""
    weights, ref, meta = load(family)
    ref = {re.sub(r"(grad/|final/)(.*)", lambda m: m[1] + our_name(family, m[2]), k): v for k, v in ref.items()}
    got: dict[str, torch.Tensor] = {}

    head = our_model(family, meta["config"], weights).train()
    data = batch(ref, 0)
    carry = head.initial_carry(data)
    for s, seed in enumerate(SUPERVISION_SEEDS):
        carry, out = step(head, carry, data, seed, f"sup/{s}/", family)
        got.update(out)
        zero(head)

    head.eval()
    with torch.no_grad():
        carry = head.initial_carry(data)
        for s in range(meta["config"]["halt_max_steps"]):
            carry, _, _, _, outputs = head(carry, data, return_outputs=True)
            got.update({f"eval/{s}/logits": outputs["logits"], f"eval/{s}/q_halt_logits": outputs["q_halt_logits"],
                        f"eval/{s}/halted": carry.halted})

    head = our_model(family, meta["config"], weights).train()
    t = meta["train"]
    adamw = build_optimizer(head.model.parameters(), OptimConfig(
        optimizer="adamw", learning_rate=t["adamw_lr"], weight_decay=t["weight_decay"], beta1=t["betas"][0],
        beta2=t["betas"][1]), decay_1d=decay_1d)
    sparse = SparseEmbeddingSignSGD([head.model.puzzle_emb], lr=t["puzzle_emb_lr"],
                                    weight_decay=t["puzzle_emb_weight_decay"])
    carry = head.initial_carry(batch(ref, 1))
    for s, seed in enumerate(TRAIN_SEEDS):
        carry, out = step(head, carry, batch(ref, 1 + s), seed, f"train/{s}/", family)
        got.update(out)
        adamw.step()
        sparse.step()
        zero(head)
        sparse.zero_grad()
    got.update({"train/final/" + k: v for k, v in head.model.state_dict().items()})
    return ref, got


def differences(ref: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> dict[str, float]:
    """name -> max |ours - reference| / max |reference| (exact quantities: 0 or 1, equal or not)."""
    out = {}
    for name, want in ref.items():
        if name.startswith("batch/"):
            continue
        have = got[name].detach()
        assert have.shape == want.shape, f"{name}: shape {tuple(have.shape)} != reference {tuple(want.shape)}"
        if name.rpartition("/")[2] in EXACT:
            out[name] = float(not torch.equal(have.to(want.dtype), want))
            continue
        scale = want.abs().max().clamp_min(1e-30)
        out[name] = float((have.float() - want.float()).abs().max() / scale)
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_matches_the_papers_code(family: str):
    ref, got = recompute(family)
    assert not set(ref) - set(got) - {k for k in ref if k.startswith("batch/")}
    diffs = differences(ref, got)
    n_params = sum(1 for k in ref if k.startswith("train/final/"))
    assert sum(1 for k in diffs if k.startswith("sup/0/grad/")) >= n_params - 3   # every trained parameter
    bad = {k: v for k, v in diffs.items() if v > RTOL}
    assert not bad, f"{family}: {len(bad)} quantities differ from the reference, e.g. {sorted(bad.items())[:6]}"


def test_the_comparison_fails_without_the_fixes(monkeypatch):
    """The comparison can fail: the old mixer norm axis (over the channels) or weight decay that skips
    the 1-D parameters each move the recorded quantities far beyond float32 rounding."""
    def norm_over_channels(self, x, rope=None, mask=None):
        x = rms_norm(x + self.token_mlp(x.transpose(1, 2)).transpose(1, 2), self.norm2.eps)
        return self.norm2(x + self.mlp(x))

    with monkeypatch.context() as m:
        m.setattr(MixerBlock, "forward", norm_over_channels)
        diffs = differences(*recompute("trm_mlp"))
    assert diffs["sup/0/logits"] > 0.1

    diffs = differences(*recompute("trm_att", decay_1d=False))
    assert diffs["train/final/inner.q_head.bias"] > 10 * RTOL
