"""The Tiny Recursive Model: presets, the recursion's gradient, halting, its loss, and a few training steps."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hrm_ray.config import PAPER_FLAGS, build_config
from hrm_ray.data.puzzles.demo import build_small_sudoku
from hrm_ray.errors import UserError
from hrm_ray.models import registry
from hrm_ray.models.layers import SelfAttentionBlock
from hrm_ray.models.puzzle import ACTLossHead
from hrm_ray.models.trm import TRM, MixerBlock, RecursionState, TRMConfig
from hrm_ray.train.loop import LocalReporter, run_loop
from hrm_ray.train.puzzle_task import PuzzleTask
from hrm_ray.train.resolve import resolve_config
from hrm_ray.train.run_files import RunFiles
from hrm_ray.train.task import WorkerContext

TINY = {"vocab_size": 6, "seq_len": 16, "d_model": 16, "n_heads": 2, "mlp_ratio": 2.0, "puzzle_emb_ndim": 16,
        "halt_max_steps": 3, "h_cycles": 2, "l_cycles": 2}


def tiny(name: str = "trm_mlp", **overrides) -> TRM:
    torch.manual_seed(0)
    return registry.build_model(registry.default_config(name, **{**TINY, **overrides}))


def batch(b: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {"inputs": torch.randint(1, 6, (b, 16), generator=g), "labels": torch.randint(2, 6, (b, 16), generator=g),
            "puzzle_identifiers": torch.zeros(b, dtype=torch.long)}


@pytest.fixture(scope="module")
def sudoku_4x4(tmp_path_factory) -> Path:
    """Generated 4x4 Sudoku (2x2 boxes): 64 training and 8 test puzzles."""
    out = tmp_path_factory.mktemp("sudoku4") / "data"
    return build_small_sudoku(out, 64, 8, blanks=6, box=(2, 2), seed=0, log=lambda _: None)


def test_presets_are_the_papers_networks():
    mlp, att = registry.default_config("trm_mlp"), registry.default_config("trm_att")
    assert registry.resolve("trm_mlp")[0].name == registry.resolve("trm_att")[0].name == "trm"
    assert type(mlp) is type(att) is TRMConfig
    for c in (mlp, att):
        assert (c.d_model, c.n_heads, c.mlp_ratio, c.l_layers, c.h_cycles, c.halt_max_steps) == (512, 8, 4.0, 2, 3, 16)
    assert (mlp.token_mixer, mlp.pos_encodings, mlp.l_cycles) == ("mlp", "none", 6)
    assert (att.token_mixer, att.pos_encodings, att.l_cycles) == ("attention", "rope", 4)
    assert isinstance(tiny("trm_mlp").inner.net.layers[0], MixerBlock)
    assert isinstance(tiny("trm_att").inner.net.layers[0], SelfAttentionBlock)
    with pytest.raises(ValueError, match="token_mixer mlp has no attention"):
        tiny("trm_mlp", pos_encodings="rope")
    with pytest.raises(UserError, match="model.token_mixer"):
        build_config(None, ["arch=trm", "model.token_mixer=conv"], aliases=PAPER_FLAGS)


def test_gradients_reach_only_the_last_repetition():
    model = tiny("trm_att", h_cycles=3, l_cycles=2)
    grad_calls: list[bool] = []
    model.inner.net.register_forward_hook(lambda *_: grad_calls.append(torch.is_grad_enabled()))
    x = batch()
    state = model.inner.reset_state(torch.ones(4, dtype=torch.bool), model.inner.empty_state(4, torch.device("cpu")))
    y0, z0 = state.y.clone().requires_grad_(True), state.z.clone().requires_grad_(True)
    _, logits, (q_halt, q_continue) = model.inner(RecursionState(y0, z0), x)
    (logits.square().mean() + q_halt.sum() + q_continue.sum()).backward()
    per_repetition = 2 + 1                        # n latent updates, one answer update
    assert grad_calls == [False] * 2 * per_repetition + [True] * per_repetition
    assert y0.grad is None and z0.grad is None     # the carried state is reached only through no-grad repetitions
    assert all(p.grad is not None for p in model.inner.net.parameters())

    single = tiny("trm_att", h_cycles=1, l_cycles=2)   # T=1: the one repetition carries gradient to the state
    y1, z1 = y0.detach().clone().requires_grad_(True), z0.detach().clone().requires_grad_(True)
    _, logits, _ = single.inner(RecursionState(y1, z1), x)
    logits.sum().backward()
    assert y1.grad is not None and z1.grad is not None


def test_halting_head_stops_an_already_solved_puzzle():
    head = ACTLossHead(tiny(halt_exploration_prob=0.0)).train()
    x = batch()
    with torch.no_grad():  # "solved": the labels are what the model answers
        _, outputs = head.model(head.initial_carry(x), x)
    solved = {**x, "labels": outputs["logits"].argmax(-1)}
    head.model.inner.q_head.bias.data.fill_(5.0)     # the halting head says "correct"
    carry, loss, metrics, all_halted = head(head.initial_carry(solved), solved)
    assert bool(all_halted) and carry.steps.tolist() == [1] * 4
    assert metrics["exact_accuracy"] == metrics["q_halt_accuracy"] == metrics["count"] == 4
    # The halting loss is BCE against exact correctness alone (no Q-continue target).
    assert metrics["q_continue_loss"] == 0
    want = F.binary_cross_entropy_with_logits(torch.full((4,), 5.0), torch.ones(4), reduction="sum")
    assert metrics["q_halt_loss"] == pytest.approx(float(want), rel=1e-5)

    head.model.inner.q_head.bias.data.fill_(-5.0)    # "not yet": deep supervision continues to halt_max_steps
    carry = head.initial_carry(solved)
    for step in range(1, 4):
        carry, _, _, all_halted = head(carry, solved)
        assert bool(all_halted) == (step == 3)
    head.eval().model.inner.q_head.bias.data.fill_(5.0)  # evaluation ignores the head: it runs every step
    carry = head.initial_carry(solved)
    carry, _, _, all_halted = head(carry, solved)
    assert not bool(all_halted)


def test_trm_defaults_to_ema_unless_set(sudoku_4x4: Path):
    def resolved(*flags: str):
        return resolve_config(build_config(None, [f"data_path={sudoku_4x4}", "ray.num_workers=0",
                                                  "global_batch_size=16", *flags],
                                           aliases=PAPER_FLAGS))
    assert resolved("arch=trm_mlp").train.ema is True
    assert resolved("arch=trm_mlp", "train.ema=false").train.ema is False
    assert resolved("arch=hrm_v1").train.ema is False


@pytest.mark.timeout(60)
def test_trm_trains_and_evaluates_in_process(sudoku_4x4: Path, tmp_path: Path):
    """trm_mlp through the in-process loop (trm_att trains in tests/test_puzzle_depth_vote.py)."""
    arch = "trm_mlp"
    cfg = build_config(None, [f"arch={arch}", f"data_path={sudoku_4x4}", "model.d_model=16", "model.n_heads=2",
                              "model.mlp_ratio=2", "model.puzzle_emb_ndim=16", "H_cycles=2", "L_cycles=2",
                              "arch.halt_max_steps=2", "global_batch_size=16", "epochs=2", "train.wandb=off",
                              "ray.num_workers=0", "train.eval_batch_size=8", f"train.run_name={arch}",
                              f"--save_dir={tmp_path}"], aliases=PAPER_FLAGS)
    task = PuzzleTask(resolve_config(cfg))
    torch.set_num_threads(1)
    run_dir = tmp_path / arch
    result = run_loop(task.cfg, task, WorkerContext(), LocalReporter(run_dir, 2), RunFiles(str(run_dir)))
    assert result.step == 8 and task.ema is not None
    assert result.last_val["examples"] == 8 and result.last_val["steps"] == 2
    assert torch.isfinite(torch.tensor(result.last_val["loss"]))


def test_a_sweep_space_over_trm_knobs_is_accepted(tmp_path: Path):
    yaml = tmp_path / "trm.yaml"
    yaml.write_text("model:\n  name: trm_mlp\ntune:\n  model.l_cycles: {choice: [2, 4, 6]}\n"
                    "  model.h_cycles: {choice: [2, 3]}\n  optim.learning_rate: {loguniform: [1.0e-4, 1.0e-3]}\n")
    cfg = build_config(str(yaml), [])
    assert set(cfg.tune.space) == {"model.l_cycles", "model.h_cycles", "optim.learning_rate"}
    (tmp_path / "bad.yaml").write_text("model:\n  name: trm_mlp\ntune:\n  model.use_gating: {choice: [true]}\n")
    with pytest.raises(UserError, match="'model.use_gating' is not a config field"):  # an HRM knob
        build_config(str(tmp_path / "bad.yaml"), [])


def test_experiments_sudoku_config_switches_to_trm():
    """configs/sudoku.yaml (an HRM sweep section, the demo sizes) with arch=trm_mlp: the HRM-only knobs go,
    the shared sizes stay, and the saved config reads back."""
    from hrm_ray.config import from_dict, to_dict

    config = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "sudoku.yaml"
    cfg = build_config(str(config), ["arch=trm_mlp"], aliases=PAPER_FLAGS, profile="demo")
    assert (cfg.model.name, cfg.model.d_model, cfg.model.halt_max_steps, cfg.model.l_cycles) == ("trm_mlp", 64, 4, 6)
    assert set(cfg.tune.space) == {"optim.learning_rate"}
    assert to_dict(from_dict(to_dict(cfg))) == to_dict(cfg)


def test_puzzle_prefix_and_q_continue_are_the_references():
    """puzzle_emb_len: the paper's 16 positions by default, 0 for ceil(puzzle_emb_ndim / d_model), none without
    a puzzle embedding; no_act_continue=false (the paper's no_ACT_continue) adds the bootstrapped Q target."""
    assert registry.default_config("trm_att").puzzle_emb_len == 16
    assert tiny().inner.prefix_len == 16 and tiny().inner.total_len == 32
    assert tiny(puzzle_emb_len=0, puzzle_emb_ndim=40).inner.prefix_len == 3
    assert tiny(puzzle_emb_ndim=0).inner.prefix_len == 0
    with pytest.raises(ValueError, match="does not fit puzzle_emb_len"):
        tiny(puzzle_emb_len=1, puzzle_emb_ndim=40)
    cfg = build_config(None, ["arch=trm_att", "arch.no_ACT_continue=false", "arch.puzzle_emb_len=4"],
                       aliases=PAPER_FLAGS)
    assert (cfg.model.no_act_continue, cfg.model.puzzle_emb_len) == (False, 4)

    x = batch()
    for no_continue in (True, False):
        model = tiny("trm_att", no_act_continue=no_continue, halt_exploration_prob=0.0).train()
        with torch.no_grad():
            model.inner.q_head.bias.copy_(torch.tensor([1.0, 2.0]))   # q_halt > 0 but q_continue higher
            carry, out = model(model.initial_carry(x), x)
        assert ("target_q_continue" in out) is not no_continue
        assert bool(carry.halted.all()) is no_continue
