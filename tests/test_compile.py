"""`--compile`: every family compiles in place and trains like eager, the loop trains with it, the HRM step
has no graph break, compile work does not grow with the cycles; the optimizers' fast paths are bit-identical
to their per-tensor loops and sign-SGD groups rows without a host sync.

Compiling is slow on CPU: the tests use tiny models and the aot_eager backend (dynamo + AOT autograd, the
graphs inductor would get), inductor itself once, on the smallest HRM, and dynamo alone through the loop."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from hrm_ray.config import build_config, load_yaml
from hrm_ray.models import registry
from hrm_ray.models.hrm_lm import HRMLanguageModel, HRMLMConfig
from hrm_ray.models.puzzle import ACTLossHead
from hrm_ray.models.registry import build_model, default_config
from hrm_ray.train import compile as compile_mod
from hrm_ray.train.adam_atan2 import AdamATan2
from hrm_ray.train.checkpoint import load_checkpoint
from hrm_ray.train.compile import compile_model
from hrm_ray.train.lm_task import LanguageModelTask
from hrm_ray.train.loop import LocalReporter, run_loop
from hrm_ray.train.optim import fast_path
from hrm_ray.train.resolve import resolve_config
from hrm_ray.train.run_files import RunFiles
from hrm_ray.train.sign_sgd import apply_sign_sgd
from hrm_ray.train.task import WorkerContext, unwrap

REPO_ROOT = Path(__file__).resolve().parents[1]
FAST = {"backend": "aot_eager"}


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def lm(backend: str = "transformer", h_cycles: int = 2) -> HRMLanguageModel:
    cfg = HRMLMConfig(vocab_size=40, d_model=16, n_heads=2, encoder_layers=1, decoder_layers=1, encoder_backend=backend)
    cfg.hrm = dataclasses.replace(cfg.hrm, h_cycles=h_cycles, deep_supervision=True, use_halting=True)
    cfg.mamba = dataclasses.replace(cfg.mamba, headdim=8, d_state=8, chunk_size=4)
    return HRMLanguageModel(cfg)


PUZZLE_SIZES = dict(d_model=16, n_heads=2, mlp_ratio=2.0, h_layers=1, l_layers=1, puzzle_emb_ndim=16, puzzle_emb_len=1,
                    halt_max_steps=2, vocab_size=6, seq_len=8, num_puzzle_identifiers=3)


def puzzle(arch: str = "hrm_v1", h_cycles: int = 2) -> ACTLossHead:
    """A tiny puzzle model of `arch` in its loss head (the sizes its family's config has)."""
    fields = {f.name for f in dataclasses.fields(registry.resolve(arch)[0].config_class)}
    sizes = {k: v for k, v in PUZZLE_SIZES.items() if k in fields}
    return ACTLossHead(build_model(default_config(arch, **sizes, h_cycles=h_cycles)))


def lm_batch(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[0, 5:] = False
    return {"encoder_ids": torch.randint(4, 40, (3, 7), generator=g), "encoder_mask": mask,
            "decoder_input_ids": torch.randint(4, 40, (3, 5), generator=g),
            "labels": torch.randint(4, 40, (3, 5), generator=g)}


def puzzle_batch(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"inputs": torch.randint(1, 6, (3, 8), generator=g), "labels": torch.randint(1, 6, (3, 8), generator=g),
            "puzzle_identifiers": torch.randint(0, 3, (3,), generator=g)}


def train_losses(model: torch.nn.Module, steps: int = 3) -> list[float]:
    """A few AdamW steps on fixed batches, in a fixed RNG stream (ACT exploration draws from it)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    carry, losses = None, []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        for i in range(steps):
            if isinstance(model, HRMLanguageModel):
                loss = model(lm_batch(i), 0.75).loss
            else:
                batch = puzzle_batch(i)
                if carry is None:
                    carry = model.initial_carry(batch)
                carry, loss, _, _ = model(carry, batch)
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(loss.item())
    return losses


def max_rel(got: list[float], want: list[float]) -> float:
    return max(abs(a - b) / abs(b) for a, b in zip(got, want, strict=True))


# case -> (the registry name it builds, the model, the units its family chooses)
CASES = {
    "hrm_lm_transformer": ("hrm_lm", lm, ["encoder", "decoder", "hrm.L", "hrm.H", "bridge", "loss_fn"]),
    "hrm_lm_mamba2": ("hrm_lm", lambda: lm("mamba2"), ["encoder", "decoder", "hrm.L", "hrm.H", "bridge", "loss_fn"]),
    "hrm_v1_gated": ("hrm_v1_gated", lambda: puzzle("hrm_v1_gated"),
                     ["model.inner.L_level", "model.inner.H_level", "model.inner.L_gate", "model.inner.H_gate",
                      "loss_fn"]),
    "transformer_baseline": ("transformer_baseline", lambda: puzzle("transformer_baseline"),
                             ["model.inner.layers.layers.0", "model.inner.layers.layers.1", "loss_fn"]),
    "trm_att": ("trm_att", lambda: puzzle("trm_att"), ["model.inner.net", "loss_fn"]),
}


def test_every_registered_family_has_a_compile_case():
    assert sorted({registry.resolve(name)[0].name for name, _, _ in CASES.values()}) == sorted(registry.FAMILIES)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", list(CASES))
def test_every_family_compiles_in_place_and_trains_like_eager(case):
    _, build, units = CASES[case]
    torch.manual_seed(0)
    want = train_losses(build(), steps=2)
    torch.manual_seed(0)
    model = build()
    names = list(model.state_dict())
    report = compile_model(model, **FAST)
    assert report.units == units
    assert max_rel(train_losses(model, steps=2), want) < 1e-4
    assert report.graphs > 0 and report.seconds > 0
    assert list(model.state_dict()) == names   # in place: the eager names, no `_orig_mod.`
    fresh = build()
    fresh.load_state_dict(model.state_dict())


@pytest.mark.timeout(150)
def test_inductor_matches_eager_on_the_puzzle_hrm():
    torch.manual_seed(0)
    want = train_losses(puzzle(), steps=2)
    torch.manual_seed(0)
    model = puzzle()
    report = compile_model(model)
    assert max_rel(train_losses(model, steps=2), want) < 1e-4
    assert report.graphs > 0


@pytest.mark.timeout(60)
def test_compile_work_does_not_grow_with_the_cycles():
    counts = []
    for cycles in (2, 4):   # the L and H updates of every cycle reuse one graph per grad mode
        torch._dynamo.reset()
        torch.manual_seed(0)
        model = puzzle(h_cycles=cycles)
        report = compile_model(model, **FAST)
        train_losses(model, steps=2)
        counts.append(report.graphs)
    assert counts[0] == counts[1]


@pytest.mark.timeout(60)
def test_hrm_step_has_no_graph_breaks():
    torch.manual_seed(0)
    model = lm()
    x, mask = torch.randn(3, 7, 16), lm_batch(0)["encoder_mask"]
    assert torch._dynamo.explain(model.hrm)(x, mask).graph_break_count == 0   # cycles, grad switches, halting
    head = puzzle("hrm_v1_gated")
    inner, batch = head.model.inner, puzzle_batch(0)
    carry = inner.reset_carry(torch.ones(3, dtype=torch.bool), inner.empty_carry(3, torch.device("cpu")))
    head.eval()   # the puzzle embedding's trainable leaf (sign-SGD) is made outside the recurrence
    assert torch._dynamo.explain(inner)(carry, batch).graph_break_count == 0


@pytest.mark.timeout(120)
def test_training_with_compile_through_the_loop(tmp_path, monkeypatch):
    # the loop's side (compile hook, compile_s, checkpoint names); dynamo without a backend compiler is enough
    monkeypatch.setattr(compile_mod, "OPTIONS", {**compile_mod.OPTIONS, "backend": "eager"})
    flags = ["--d_model", "16", "--n_heads", "2", "--encoder_layers", "1", "--decoder_layers", "1", "--wandb", "off",
             "--synthetic_train_size", "64", "--synthetic_val_size", "16", "--batch_size", "4", "--log_steps", "2",
             "--warmup_steps", "0", "--steps", "4", "--val_every", "4", "--grad_accum_steps", "2",
             "model.hrm.deep_supervision=true", "model.hrm.use_halting=true", "--gate_ramp_steps", "4"]
    losses, tasks = {}, {}
    for name in ("eager", "compiled"):
        cfg = build_config(None, [*flags, "--run_name", name, *(["--compile"] if name == "compiled" else [])])
        tasks[name] = LanguageModelTask(resolve_config(cfg))
        run_loop(tasks[name].cfg, tasks[name], WorkerContext(), LocalReporter(tmp_path / name, 0),
                 RunFiles(str(tmp_path / name)))
        records = [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        losses[name] = [r["loss"] for r in records if r["split"] == "train"]
        assert ("compile_s" in records[0]) == (name == "compiled")
    assert max_rel(losses["compiled"], losses["eager"]) < 1e-4
    weights = load_checkpoint(tmp_path / "compiled" / "checkpoint_00000004")["model"]
    eager_model = tasks["eager"].build_model()
    assert sorted(weights) == sorted(eager_model.state_dict())  # safetensors keeps names, not their order
    eager_model.load_state_dict(weights)


def test_compile_flag_profiles_and_unwrap():
    assert build_config(None, ["--compile"]).train.compile is True
    assert build_config(None, []).train.compile is False
    configs = REPO_ROOT / "experiments" / "configs"
    for name in ("stage_a", "stage_b", "stage_c", "sudoku", "arc"):
        for profile in ("gpu", "cluster"):
            assert load_yaml(configs / f"{name}.yaml", profile=profile).train.compile, (name, profile)
        assert not load_yaml(configs / f"{name}.yaml", profile="demo").train.compile
    model = torch.nn.Linear(2, 2)
    assert unwrap(torch.compile(model)) is model


def test_optimizer_fast_paths_are_bit_identical_to_the_loops():
    torch.manual_seed(0)
    shapes = [(6, 5), (5,), (4, 4)]

    def run(make) -> list[torch.Tensor]:
        params = [torch.nn.Parameter(torch.randn(s, generator=torch.Generator().manual_seed(i)))
                  for i, s in enumerate(shapes)]
        opt = make([{"params": params[:2], "weight_decay": 0.1}, {"params": params[2:], "weight_decay": 0.0}])
        g = torch.Generator().manual_seed(7)
        for step in range(4):
            for i, p in enumerate(params):
                p.grad = None if (step == 0 and i == 1) else torch.randn(p.shape, generator=g)
            opt.step()
        return params

    for loop, fast in [(lambda g: AdamATan2(g, lr=0.01, foreach=False), lambda g: AdamATan2(g, lr=0.01)),
                       (lambda g: torch.optim.AdamW(g, lr=0.01, foreach=False),
                        lambda g: torch.optim.AdamW(g, lr=0.01, **fast_path(g)))]:   # as build_optimizer on CPU
        for a, b in zip(run(loop), run(fast), strict=True):
            assert torch.equal(a, b)


def test_sign_sgd_without_unique_matches_the_unique_update():
    def reference(weights, ids, grads, lr, weight_decay):
        unique, inverse = ids.unique(return_inverse=True)
        summed = torch.zeros(len(unique), grads.shape[1]).index_add_(0, inverse, grads)
        rows = weights[unique]
        updated = rows * (1.0 - lr * weight_decay) - lr * torch.sign(summed)
        weights[unique] = torch.where(torch.isfinite(summed).all(), updated, rows)

    g = torch.Generator().manual_seed(0)
    for trial in range(40):
        weights = torch.randn(7, 4, generator=g)
        ids = torch.randint(0, 7, (int(torch.randint(1, 20, (1,), generator=g)),), generator=g)
        grads = torch.randn(len(ids), 4, generator=g)
        if trial % 5 == 0:
            grads[-1, 0] = float("inf")
        want, got = weights.clone(), weights.clone()
        reference(want, ids, grads, 0.1, 0.5)
        apply_sign_sgd(got, ids, grads, 0.1, 0.5)
        assert torch.equal(got, want)
