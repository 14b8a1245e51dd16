"""Golden outputs of every model family, for tests/test_golden_outputs.py (bit-identical on CPU).

The goldens guard model numerics through refactors: on fixed seeds and fixed inputs, each family's
outputs, losses, diagnostics and the gradient of every parameter are recorded once, from a fixed
revision of the code, and the test recomputes them with the current code and asserts `torch.equal`
for every tensor. The test imports this file for the computation (`compute_case`) and never
regenerates the goldens.

How the committed goldens were made (from git HEAD, not from a working tree being edited):

    mkdir -p /tmp/golden_head && git -C /work/main archive HEAD | tar -x -C /tmp/golden_head
    cd /tmp && PYTHONPATH=/tmp/golden_head /work/main/.venv/bin/python \\
        /work/main/tests/golden/make_golden.py --out /work/main/tests/golden \\
        --source "git HEAD $(git -C /work/main rev-parse HEAD)"

Run from outside the repository so that `hrm_ray` is imported from PYTHONPATH (the script prints
and records `hrm_ray.__file__`). Regenerate only deliberately: when a change of numerics is
intended, or when a refactor renames parameters (the test requires the names to match exactly).

Families (tiny sizes; float32, CPU, torch.set_num_threads(1)):
- hrm_v1, hrm_v1_gated, transformer_baseline: the puzzle models inside ACTLossHead (the training
  loss). Train mode: 4 ACT segments on 4 batches with the carry kept across them (halting, the
  bootstrapped Q target and the refill of halted slots run), per segment the logits, q_halt /
  q_continue / target_q_continue logits, gate statistics, the loss, every metric, steps/halted and
  the sparse puzzle-embedding gradient; `loss.backward()` after each segment, and the gradient of
  every parameter accumulated over the segments. Eval mode (no grad): halt_max_steps segments on
  one batch, logits and Q logits per segment.
- hrm_lm_transformer (residual bridge), hrm_lm_mamba2 (the project's PyTorch Mamba2, prefix
  bridge): HRMLanguageModel with deep supervision and halting on, gate scale 0.75 (a point of the
  trainer's ramp), on a batch with right- and left-padded prompts and -100 label padding. Train
  mode: logits, loss, its parts (ce, deep_supervision, halting), every diagnostic, num_tokens,
  the encoder's kernel path and every parameter's gradient; eval mode: generation with the KV
  cache and adaptive halting, greedy and sampled (tokens, lengths, cycles_used).

Before running, every parameter gets a small noise keyed by its name (so zero-initialised heads
and gate output layers carry signal and the Q / gate / halting paths are exercised), and the
puzzle-embedding table is filled with keyed noise.

The test reruns this file's computation (constants, batches, perturbation), so editing any of it
changes what the goldens mean: regenerate them from the same revision in the same change. Bits
also depend on the torch build and the CPU kernels it dispatches to; each file records the torch
version and CPU capability it was made with (torch 2.13.0+cpu, AVX512, via constraints.txt).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import zlib
from pathlib import Path
from typing import Any

import torch

FORMAT = 1
PERTURB_STD = 0.02
PUZZLE_EMB_STD = 0.25
LM_GATE_SCALE = 0.75  # gate_scale(step=4, warmup_steps=2, ramp_steps=4) of hrm_ray.train.gate_schedule

# Puzzle: arch name -> preset it starts from (as hrm_ray.train.puzzle_task.ARCHS).
PUZZLE_PRESETS = {"hrm_v1": "hrm_v1", "hrm_v1_gated": "hrm_v1_gated", "transformer_baseline": "hrm_v1"}
PUZZLE_OVERRIDES = dict(vocab_size=11, seq_len=12, num_puzzle_identifiers=5, puzzle_emb_ndim=12, hidden_size=8,
                        num_heads=2, expansion=2.0, H_layers=1, L_layers=1, H_cycles=2, L_cycles=2,
                        halt_max_steps=3, halt_exploration_prob=0.5)
PUZZLE_BATCH, PUZZLE_TRAIN_SEGMENTS = 4, 4

LM_OVERRIDES = {"vocab_size": 40, "d_model": 16, "n_heads": 2, "encoder_layers": 1, "decoder_layers": 1,
                "mlp_ratio": 2.0, "mamba.d_state": 8, "mamba.headdim": 16, "mamba.chunk_size": 4,
                "hrm.h_cycles": 3, "hrm.l_steps": 2, "hrm.deep_supervision": True, "hrm.ds_weight": 0.3,
                "hrm.use_halting": True, "hrm.halting_weight": 0.5, "hrm.halt_target": 0.2,
                "bridge.prefix_tokens": 2}
LM_GENERATE_TOKENS = 6


# --------------------------------------------------------------------------- shared helpers


def _key(name: str, seed: int) -> int:
    return (zlib.crc32(name.encode()) + 1_000_003 * seed) % (2**63)


def keyed_noise(name: str, shape: torch.Size, seed: int, std: float) -> torch.Tensor:
    """Noise that depends only on (name, seed): independent of the order parameters are built in."""
    g = torch.Generator().manual_seed(_key(name, seed))
    return torch.randn(shape, generator=g) * std


@torch.no_grad()
def perturb(model: torch.nn.Module, seed: int) -> None:
    for name, p in model.named_parameters():
        p.add_(keyed_noise(name, p.shape, seed, PERTURB_STD).to(p.dtype))


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor | None]:
    return {f"grad/{name}": None if p.grad is None else p.grad.detach().clone()
            for name, p in model.named_parameters()}


def _plain(value: Any) -> Any:
    return value.detach().clone() if isinstance(value, torch.Tensor) else value


def names(model: torch.nn.Module) -> dict[str, list[str]]:
    return {"param_names": [n for n, _ in model.named_parameters()], "state_dict_keys": list(model.state_dict())}


# --------------------------------------------------------------------------- puzzle HRM (ACT v1)


def puzzle_batch(c: dict[str, Any], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(1, c["vocab_size"], (PUZZLE_BATCH, c["seq_len"]), generator=g)
    labels[0, -3:] = -100  # ignored label positions
    return {"inputs": torch.randint(1, c["vocab_size"], (PUZZLE_BATCH, c["seq_len"]), generator=g),
            "labels": labels,
            "puzzle_identifiers": torch.randint(0, c["num_puzzle_identifiers"], (PUZZLE_BATCH,), generator=g)}


def puzzle_model(arch: str, config: dict[str, Any]) -> torch.nn.Module:
    from hrm_ray.models.puzzle import HRMACTv1, preset
    from hrm_ray.models.puzzle.baseline import PuzzleTransformer

    classes = {"hrm_v1": HRMACTv1, "hrm_v1_gated": HRMACTv1, "transformer_baseline": PuzzleTransformer}
    return classes[arch](preset(PUZZLE_PRESETS[arch], **config))


def compute_puzzle(case: dict[str, Any]) -> dict[str, Any]:
    from hrm_ray.models.puzzle import ACTLossHead

    seed, config = case["seed"], case["config"]
    torch.manual_seed(seed)
    model = puzzle_model(case["arch"], config)
    head = ACTLossHead(model, loss_type=case["loss_type"])
    perturb(model, seed)
    if model.puzzle_emb is not None:
        with torch.no_grad():
            w = model.puzzle_emb.weights
            w.copy_(keyed_noise("puzzle_emb.weights", w.shape, seed, PUZZLE_EMB_STD))
    out: dict[str, Any] = {}

    head.train()
    torch.manual_seed(seed + 1)  # halting exploration draws from the global generator
    batches = [puzzle_batch(config, seed + 100 + i) for i in range(PUZZLE_TRAIN_SEGMENTS)]
    carry = head.initial_carry(batches[0])
    for s, batch in enumerate(batches):
        carry, loss, metrics, all_halted, outputs = head(carry, batch, return_outputs=True)
        loss.backward()
        p = f"train/{s}/"
        out[p + "loss"] = _plain(loss)
        out[p + "all_halted"] = _plain(all_halted)
        out[p + "steps"], out[p + "halted"] = _plain(carry.steps), _plain(carry.halted)
        out.update({p + "out/" + k: _plain(v) for k, v in sorted(outputs.items())})
        out.update({p + "metric/" + k: _plain(v) for k, v in sorted(metrics.items())})
        emb = model.puzzle_emb
        if emb is not None:
            out[p + "puzzle_emb/local_ids"] = _plain(emb.local_ids)
            out[p + "puzzle_emb/local_grad"] = _plain(emb.local.grad)
    out.update(grads(model))

    head.eval()
    batch = batches[0]
    with torch.no_grad():
        carry = head.initial_carry(batch)
        for s in range(config["halt_max_steps"]):
            carry, loss, metrics, all_halted, outputs = head(carry, batch, return_outputs=True)
            p = f"eval/{s}/"
            out[p + "loss"], out[p + "all_halted"] = _plain(loss), _plain(all_halted)
            for k in ("logits", "q_halt_logits", "q_continue_logits"):
                out[p + "out/" + k] = _plain(outputs[k])
            out[p + "metric/exact_accuracy"] = _plain(metrics["exact_accuracy"])
    return {**names(model), "tensors": out}


def puzzle_case(arch: str, seed: int) -> dict[str, Any]:
    from hrm_ray.models.puzzle import preset

    full = dataclasses.asdict(preset(PUZZLE_PRESETS[arch], **PUZZLE_OVERRIDES))
    return {"kind": "puzzle", "arch": arch, "loss_type": "stablemax_cross_entropy", "seed": seed, "config": full}


# --------------------------------------------------------------------------- HRM x LM


def lm_config(config: dict[str, Any]):
    """ModelConfig from its plain dict; every key must still be a field (no silent drops)."""
    from hrm_ray.config import ModelConfig

    cfg = ModelConfig()

    def fill(obj: Any, values: dict[str, Any], path: str) -> None:
        fields = {f.name for f in dataclasses.fields(obj)}
        for key, value in values.items():
            if key not in fields:
                raise KeyError(f"ModelConfig has no field {path}{key} (recorded in the golden config)")
            if isinstance(value, dict):
                fill(getattr(obj, key), value, f"{path}{key}.")
            else:
                setattr(obj, key, value)

    fill(cfg, config, "")
    return cfg


def lm_batch(vocab: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    batch, enc_len, dec_len = 3, 7, 5
    enc_mask = torch.ones(batch, enc_len, dtype=torch.bool)
    enc_mask[0, enc_len - 2:] = False  # right-padded prompt
    enc_mask[1, :3] = False  # left-padded prompt
    encoder_ids = torch.randint(4, vocab, (batch, enc_len), generator=g).masked_fill(~enc_mask, 0)
    decoder_input_ids = torch.randint(4, vocab, (batch, dec_len), generator=g)
    labels = torch.randint(4, vocab, (batch, dec_len), generator=g)
    labels[2, dec_len - 2:] = -100  # right-padded target
    decoder_input_ids[2, dec_len - 1:] = 0
    return {"encoder_ids": encoder_ids, "encoder_mask": enc_mask, "decoder_input_ids": decoder_input_ids,
            "labels": labels, "decoder_mask": labels != -100}


def compute_lm(case: dict[str, Any]) -> dict[str, Any]:
    from hrm_ray.models import HRMLanguageModel

    seed, scale = case["seed"], case["gate_scale"]
    torch.manual_seed(seed)
    model = HRMLanguageModel(lm_config(case["config"]))
    perturb(model, seed)
    batch = lm_batch(case["config"]["vocab_size"], seed + 100)
    out: dict[str, Any] = {}

    model.train()
    result = model(dict(batch), gate_scale=scale)
    result.loss.backward()
    out["train/logits"], out["train/loss"] = _plain(result.logits), _plain(result.loss)
    out["train/num_tokens"] = _plain(result.num_tokens)
    out.update({"train/losses/" + k: _plain(v) for k, v in sorted(result.losses.items())})
    out.update({"train/diagnostics/" + k: _plain(v) for k, v in sorted(result.diagnostics.items())})
    out["kernel_path"] = model.encoder.kernel_path
    out.update(grads(model))

    for mode, sampling in (("greedy", {}),
                           ("sampled", {"temperature": 1.0, "top_p": 0.95,
                                        "generator": torch.Generator().manual_seed(seed + 200)})):
        gen = model.generate(batch["encoder_ids"], batch["encoder_mask"], LM_GENERATE_TOKENS, eos_id=None,
                             use_cache=True, adaptive_halting=True, gate_scale=scale, **sampling)
        p = f"generate/{mode}/"
        out[p + "tokens"], out[p + "lengths"] = _plain(gen.tokens), _plain(gen.lengths)
        out[p + "cycles_used"] = _plain(gen.cycles_used)
    return {**names(model), "tensors": out}


def lm_case(backend: str, bridge: str, seed: int) -> dict[str, Any]:
    overrides = {**LM_OVERRIDES, "encoder_backend": backend, "bridge.mode": bridge}
    cfg = lm_config({})
    for key, value in overrides.items():
        section, _, name = key.rpartition(".")
        setattr(getattr(cfg, section) if section else cfg, name, value)
    return {"kind": "lm", "seed": seed, "gate_scale": LM_GATE_SCALE, "config": dataclasses.asdict(cfg)}


# --------------------------------------------------------------------------- families


def families() -> dict[str, dict[str, dict[str, Any]]]:
    """family -> case name -> case (what compute_case needs: kind, seed, config, ...)."""
    return {
        "hrm_v1": {"train_eval": puzzle_case("hrm_v1", 0)},
        "hrm_v1_gated": {"train_eval": puzzle_case("hrm_v1_gated", 1)},
        "transformer_baseline": {"train_eval": puzzle_case("transformer_baseline", 2)},
        # one bridge mode each (the default residual, and prefix) keeps the files small
        "hrm_lm_transformer": {"residual_bridge": lm_case("transformer", "residual", 3)},
        "hrm_lm_mamba2": {"prefix_bridge": lm_case("mamba2", "prefix", 4)},
    }


def compute_case(case: dict[str, Any]) -> dict[str, Any]:
    """Rebuild the case's model from its recorded config and run it: {param_names, state_dict_keys, tensors}.

    Single-threaded float32 on CPU; the caller restores the thread count."""
    if torch.get_default_dtype() != torch.float32:
        raise RuntimeError(f"default dtype is {torch.get_default_dtype()}, goldens are float32")
    torch.set_num_threads(1)
    if case["kind"] == "puzzle":
        return compute_puzzle(case)
    if case["kind"] == "lm":
        return compute_lm(case)
    raise ValueError(f"unknown case kind {case['kind']!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--source", default="", help="what code the goldens come from, e.g. 'git HEAD <sha>'")
    parser.add_argument("--family", action="append", help="only these families (default: all)")
    args = parser.parse_args(argv)

    import hrm_ray

    print(f"hrm_ray imported from {hrm_ray.__file__}")
    args.out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    try:
        for family, cases in families().items():
            if args.family and family not in args.family:
                continue
            recorded = {}
            for name, case in cases.items():
                recorded[name] = {**case, **compute_case(case)}
            golden = {"format": FORMAT, "family": family, "torch_version": str(torch.__version__),
                      "cpu_capability": torch.backends.cpu.get_cpu_capability(), "source": args.source,
                      "hrm_ray_file": hrm_ray.__file__, "cases": recorded}
            path = args.out / f"{family}.pt"
            torch.save(golden, path)
            n = sum(len(c["tensors"]) for c in recorded.values())
            print(f"{path}: {len(recorded)} case(s), {n} entries, {path.stat().st_size} bytes")
    finally:
        torch.set_num_threads(threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
