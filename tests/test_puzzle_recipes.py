"""The papers' recipes (experiments/configs/recipes/) carry the papers' settings, read from the HRM and TRM
repositories' README commands and config yamls, and build the papers' networks."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hrm_ray.config import PAPER_FLAGS, build_config
from hrm_ray.models import registry

RECIPES = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "recipes"

# recipe -> (arch, epochs, eval_interval, lr, puzzle_emb_lr, weight_decay (both), ema, GPUs, (T, n))
PAPERS = {
    "hrm_sudoku_extreme": ("hrm_v1", 20000, 2000, 1e-4, 1e-4, 1.0, False, 8, (2, 2)),
    "hrm_maze_hard": ("hrm_v1", 20000, 2000, 1e-4, 1e-4, 1.0, False, 8, (2, 2)),
    "hrm_arc1": ("hrm_v1", 100000, 10000, 1e-4, 1e-2, 0.1, False, 8, (2, 2)),
    "trm_sudoku_extreme": ("trm_mlp", 50000, 5000, 1e-4, 1e-4, 1.0, True, 1, (3, 6)),
    "trm_maze_hard": ("trm_att", 50000, 5000, 1e-4, 1e-4, 1.0, True, 4, (3, 4)),
    "trm_arc1": ("trm_att", 100000, 10000, 1e-4, 1e-2, 0.1, True, 4, (3, 4)),
}


def test_every_recipe_is_checked():
    assert sorted(p.stem for p in RECIPES.glob("*.yaml")) == sorted(PAPERS)


@pytest.mark.parametrize("recipe", sorted(PAPERS))
def test_recipe_has_the_papers_settings(recipe: str):
    arch, epochs, eval_interval, lr, emb_lr, wd, ema, gpus, cycles = PAPERS[recipe]
    cfg = build_config(str(RECIPES / f"{recipe}.yaml"), [], aliases=PAPER_FLAGS)
    t, o, m = cfg.train, cfg.optim, cfg.model
    assert (m.name, t.epochs, t.eval_interval, t.global_batch_size, t.ema) == (arch, epochs, eval_interval, 768, ema)
    assert (o.optimizer, o.learning_rate, o.puzzle_emb_lr, o.weight_decay, o.puzzle_emb_weight_decay) == \
        ("adam_atan2", lr, emb_lr, wd, wd)
    assert (o.beta1, o.beta2, o.warmup_steps, o.lr_min_ratio, o.grad_clip) == (0.9, 0.95, 2000, 1.0, 0)
    assert (cfg.ray.num_workers, cfg.ray.use_gpu, t.ema_puzzle_emb) == (gpus, True, False)
    assert (m.h_cycles, m.l_cycles, m.d_model, m.n_heads, m.mlp_ratio, m.halt_max_steps) == (*cycles, 512, 8, 4.0, 16)
    if arch.startswith("trm"):
        assert (m.l_layers, m.puzzle_emb_len, m.no_act_continue) == (2, 16, True)
    else:
        assert (m.h_layers, m.l_layers, m.puzzle_emb_len) == (4, 4, 1)


@pytest.mark.parametrize("arch, vocab, seq_len, millions", [("trm_mlp", 11, 81, 5.0), ("trm_att", 12, 900, 6.8),
                                                             ("hrm_v1", 11, 81, 27.3)])
def test_the_papers_network_sizes(arch: str, vocab: int, seq_len: int, millions: float):
    """TRM paper: 5M parameters for the MLP network (Sudoku), 7M with attention; HRM paper: 27M."""
    with torch.device("meta"):
        model = registry.build_model(registry.default_config(arch, vocab_size=vocab, seq_len=seq_len))
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(millions, abs=0.05)
    if arch != "hrm_v1":
        assert model.inner.prefix_len == 16 and model.inner.total_len == seq_len + 16
