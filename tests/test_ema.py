"""The warm-up EMA (train.ema_warmup): a short run's average follows its weights; the papers' recipes keep the
papers' constant decay from the initial weights."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hrm_ray.config import TrainConfig, build_config
from hrm_ray.train.ema import EMA


def _fit_with_ema(warmup: bool, steps: int = 100) -> tuple[float, float, float]:
    """A linear regression trained for `steps` Adam steps: (loss at init, of the live weights, of the EMA weights)."""
    torch.manual_seed(0)
    x = torch.randn(64, 8)
    y = x @ torch.randn(8, 1) + 0.5
    model = torch.nn.Linear(8, 1)
    loss = lambda: torch.nn.functional.mse_loss(model(x), y)  # noqa: E731
    with torch.no_grad():
        initial = loss().item()
    ema, opt = EMA(model, decay=0.999, warmup=warmup), torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        loss().backward()
        opt.step()
        ema.update(model)
    with torch.no_grad():
        live = loss().item()
        with ema.swapped_in(model):
            averaged = loss().item()
    return initial, live, averaged


def test_ema_warmup_tracks_the_weights_of_a_short_run():
    """The papers' constant decay from the initial weights leaves a 100-step run's EMA near its initialisation
    (0.999**100 = 90% of the average); the warm-up decay (the config's default) follows the trained weights."""
    initial, live, averaged = _fit_with_ema(warmup=True)
    assert live < 0.01 * initial
    assert averaged < 0.05 * initial
    _, _, constant = _fit_with_ema(warmup=False)
    assert constant > 0.3 * initial
    ema = EMA(torch.nn.Linear(2, 2), decay=0.999, warmup=True)
    assert ema.current_decay() == pytest.approx(2 / 11)
    ema.num_updates = 20_000
    assert ema.current_decay() == 0.999


def test_ema_warmup_is_the_default_and_the_papers_recipes_keep_the_constant_decay():
    assert TrainConfig().ema_warmup is True
    recipes = sorted((Path(__file__).resolve().parents[1] / "experiments" / "configs" / "recipes").glob("*.yaml"))
    assert recipes
    for recipe in recipes:
        assert build_config(str(recipe), []).train.ema_warmup is False, recipe.name


def test_the_language_model_task_keeps_an_ema_for_validation_and_best_model(tmp_path):
    """train.ema on the LM task (the LM bench's --ema): updated every step, and best-model/ holds its weights."""
    from safetensors.torch import load_file

    from hrm_ray.train.lm_task import LanguageModelTask
    from hrm_ray.train.loop import LocalReporter, run_loop
    from hrm_ray.train.resolve import resolve_config
    from hrm_ray.train.run_files import RunFiles
    from hrm_ray.train.task import WorkerContext

    flags = ["--d_model", "16", "--n_heads", "2", "--encoder_layers", "1", "--decoder_layers", "1", "--wandb", "off",
             "--synthetic_train_size", "64", "--synthetic_val_size", "8", "--warmup_steps", "0", "--steps", "4",
             "--val_every", "4", "--batch_size", "4", "model.hrm.enabled=false", "train.ema=true", "--run_name", "e"]
    task = LanguageModelTask(resolve_config(build_config(None, flags)))
    run_loop(task.cfg, task, WorkerContext(), LocalReporter(tmp_path / "e", 0), RunFiles(str(tmp_path / "e")))
    assert task.ema is not None and task.ema.num_updates == 4 and task.ema.warmup
    best = load_file(str(next((tmp_path / "e").rglob("best-model/model.safetensors"))))
    for name, shadow in task.ema.shadow.items():
        torch.testing.assert_close(best[name], shadow, msg=name)
