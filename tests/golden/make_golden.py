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
- hrm_v1, hrm_v1_gated, transformer_baseline, trm_mlp, trm_att (and trm_att with the Q-continue
  target, no_act_continue=False): the puzzle models inside ACTLossHead (the training loss). Train mode: 4 ACT segments on 4 batches with the carry kept across them (halting, the
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

Models are built through hrm_ray.models.registry: a puzzle case's model is `registry.build_model` of
`registry.default_config(case["arch"])` (hrm_v1 and hrm_v1_gated are presets of the hrm_act_v1 family,
transformer_baseline is a family) with the recorded config's fields and `loss_type` set on it; an LM case's
is the same for "hrm_lm".

Field names: the committed goldens were recorded before the model configs shared one spelling, so their
configs carry the old names (the puzzle's H_cycles, L_cycles, H_layers, L_layers, hidden_size, num_heads,
expansion, rms_norm_eps; the LM's hrm.l_steps, and no `name`). `translate` flattens a recorded config to
dotted paths and maps every path that is not a field of the family's config class through the class's
`ALIASES` (old name -> dotted field path), by the whole path first and then by its last part
("hrm.l_steps" -> "l_steps" -> "hrm.l_cycles"); a key that is neither a field nor an alias is an error,
so nothing recorded is dropped silently. Configs recorded with the current names pass through unchanged.
The .pt files themselves are never rewritten by this translation.

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

# Puzzle: the model names of the cases (registry names: presets of hrm_act_v1, or a family).
PUZZLE_OVERRIDES = dict(vocab_size=11, seq_len=12, num_puzzle_identifiers=5, puzzle_emb_ndim=12, d_model=8,
                        n_heads=2, mlp_ratio=2.0, h_layers=1, l_layers=1, h_cycles=2, l_cycles=2,
                        halt_max_steps=3, halt_exploration_prob=0.5)
# The TRM (presets of the trm family): one network of l_layers, the paper's 16-position puzzle prefix.
TRM_OVERRIDES = {**{k: v for k, v in PUZZLE_OVERRIDES.items() if k not in ("h_layers", "l_layers")}, "l_layers": 2}
PUZZLE_BATCH, PUZZLE_TRAIN_SEGMENTS = 4, 4

LM_OVERRIDES = {"vocab_size": 40, "d_model": 16, "n_heads": 2, "encoder_layers": 1, "decoder_layers": 1,
                "mlp_ratio": 2.0, "mamba.d_state": 8, "mamba.headdim": 16, "mamba.chunk_size": 4,
                "hrm.h_cycles": 3, "hrm.l_cycles": 2, "hrm.deep_supervision": True, "hrm.ds_weight": 0.3,
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


# --------------------------------------------------------------------------- configs through the registry


def translate(config_class: type, recorded: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A recorded (nested) config -> {dotted field path: value}, old names mapped through ALIASES."""
    out: dict[str, Any] = {}
    for key, value in recorded.items():
        path = prefix + key
        if isinstance(value, dict):
            out.update(translate(config_class, value, path + "."))
        else:
            out[path] = value
    fields = _field_paths(config_class)
    aliases = config_class.ALIASES
    translated = {}
    for path, value in out.items():
        target = path if path in fields else aliases.get(path, aliases.get(path.rpartition(".")[2]))
        if target not in fields:
            raise KeyError(f"{config_class.__name__} has no field or alias {path} (recorded in the golden config)")
        translated[target] = value
    return translated


def _field_paths(config_class: type, prefix: str = "") -> set[str]:
    paths = set()
    for f in dataclasses.fields(config_class):
        if dataclasses.is_dataclass(f.default_factory if f.default_factory is not dataclasses.MISSING else None):
            paths |= _field_paths(f.default_factory, prefix + f.name + ".")
        else:
            paths.add(prefix + f.name)
    return paths


def model_config(name: str, values: dict[str, Any]):
    """registry.default_config(name) with {dotted path: value} set on it."""
    from hrm_ray.models import registry

    cfg = registry.default_config(name)
    for path, value in values.items():
        parent = cfg
        *sections, leaf = path.split(".")
        for section in sections:
            parent = getattr(parent, section)
        setattr(parent, leaf, value)
    return cfg


def case_model(case: dict[str, Any]) -> str:
    """The registry name (a family or a preset) whose model a case runs."""
    return case["arch"] if case["kind"] == "puzzle" else "hrm_lm"


def models_to_cover() -> list[str]:
    """The registry names the goldens must run between them: each preset of a family, or the family itself
    where it has none."""
    from hrm_ray.models import registry

    return [name for family in registry.FAMILIES.values() for name in (list(family.presets) or [family.name])]


def case_config(case: dict[str, Any]):
    """The model config of a recorded case (any field spelling), built through the registry."""
    from hrm_ray.models import registry

    name = case_model(case)
    values = translate(registry.resolve(name)[0].config_class, case["config"])
    values.pop("name", None)
    if case["kind"] == "puzzle":
        values["loss_type"] = case["loss_type"]
    return model_config(name, values)


# --------------------------------------------------------------------------- puzzle HRM (ACT v1)


def puzzle_batch(c: dict[str, Any], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(1, c["vocab_size"], (PUZZLE_BATCH, c["seq_len"]), generator=g)
    labels[0, -3:] = -100  # ignored label positions
    return {"inputs": torch.randint(1, c["vocab_size"], (PUZZLE_BATCH, c["seq_len"]), generator=g),
            "labels": labels,
            "puzzle_identifiers": torch.randint(0, c["num_puzzle_identifiers"], (PUZZLE_BATCH,), generator=g)}


def compute_puzzle(case: dict[str, Any]) -> dict[str, Any]:
    from hrm_ray.models.puzzle import ACTLossHead
    from hrm_ray.models.registry import build_model

    seed, cfg = case["seed"], case_config(case)
    config = dataclasses.asdict(cfg)
    torch.manual_seed(seed)
    model = build_model(cfg)
    head = ACTLossHead(model, loss_type=cfg.loss_type)
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


def puzzle_case(arch: str, seed: int, **fields: Any) -> dict[str, Any]:
    from hrm_ray.models.registry import default_config

    overrides = TRM_OVERRIDES if arch.startswith("trm") else PUZZLE_OVERRIDES
    full = dataclasses.asdict(default_config(arch, **overrides, **fields))
    return {"kind": "puzzle", "arch": arch, "loss_type": full["loss_type"], "seed": seed, "config": full}


# --------------------------------------------------------------------------- HRM x LM


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
    from hrm_ray.models.registry import build_model

    seed, scale, cfg = case["seed"], case["gate_scale"], case_config(case)
    torch.manual_seed(seed)
    model = build_model(cfg)
    perturb(model, seed)
    batch = lm_batch(cfg.vocab_size, seed + 100)
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
    cfg = model_config("hrm_lm", {**LM_OVERRIDES, "encoder_backend": backend, "bridge.mode": bridge})
    return {"kind": "lm", "seed": seed, "gate_scale": LM_GATE_SCALE, "config": dataclasses.asdict(cfg)}


# --------------------------------------------------------------------------- families


def families() -> dict[str, dict[str, dict[str, Any]]]:
    """family -> case name -> case (what compute_case needs: kind, seed, config, ...)."""
    return {
        "hrm_v1": {"train_eval": puzzle_case("hrm_v1", 0)},
        "hrm_v1_gated": {"train_eval": puzzle_case("hrm_v1_gated", 1)},
        "transformer_baseline": {"train_eval": puzzle_case("transformer_baseline", 2)},
        "trm_mlp": {"train_eval": puzzle_case("trm_mlp", 5)},
        "trm_att": {"train_eval": puzzle_case("trm_att", 6),
                    "q_continue": puzzle_case("trm_att", 7, no_act_continue=False)},
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

    missing = sorted(set(models_to_cover()) - {case_model(c) for cases in families().values() for c in cases.values()})
    if missing:
        parser.error(f"no golden case runs {', '.join(missing)}: add one to families()")

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
