"""docs/architecture.md's "How to add a model family", run: a toy puzzle family defined in this module (its config,
its model, its compile units), registered with one registry call, trains for two steps through the normal
training entry point (hrm_ray.train.ray_trainer.train, in-process) and is known by name to the config, the
flags and `--compile` without any other file knowing it."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from hrm_ray.config import PAPER_FLAGS, build_config
from hrm_ray.data.puzzles.demo import build_small_sudoku
from hrm_ray.models import registry
from hrm_ray.models.layers import SwiGLU
from hrm_ray.models.puzzle import ACTCarry, ACTLossHead, Batch, PuzzleInputs, PuzzleModel, PuzzleModelConfig
from hrm_ray.models.registry import Family
from hrm_ray.train.compile import compile_units
from hrm_ray.train.ray_trainer import train

# --------------------------------------------------------------------------- the family: config, model, units


@dataclass
class ToyConfig(PuzzleModelConfig):
    """The shared puzzle fields and one of its own."""
    name: str = "toy_mixer"
    mixer_ratio: float = 2.0

    def validate(self) -> ToyConfig:
        need = self.checks(("d_model", "n_heads"))
        need(self.mixer_ratio > 0, "mixer_ratio must be positive")
        return self


class ToyInner(PuzzleInputs):
    """The shared inputs and heads around one SwiGLU over the channels."""

    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        self.config = c = config
        self.init_inputs(c)
        self.mixer = SwiGLU(c.d_model, int(c.mixer_ratio * c.d_model))
        self.init_heads(c)

    def forward(self, batch: Batch) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        x = self.input_embeddings(batch["inputs"], batch["puzzle_identifiers"])
        return self.heads(x + self.mixer(x))


class ToyMixer(PuzzleModel):
    """One segment per example: every slot halts after its first forward."""

    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        self.config = config.validate()
        self.inner = ToyInner(config)

    def initial_carry(self, batch: Batch) -> ACTCarry:
        halted = torch.ones(batch["inputs"].shape[0], dtype=torch.bool, device=batch["inputs"].device)
        return ACTCarry(None, torch.zeros_like(halted, dtype=torch.int32), halted, batch)

    def forward(self, carry: ACTCarry, batch: Batch) -> tuple[ACTCarry, dict[str, torch.Tensor]]:
        logits, (q_halt, q_continue) = self.inner(batch)
        done = ACTCarry(None, torch.ones_like(carry.steps), torch.ones_like(carry.halted), batch)
        return done, {"logits": logits, "q_halt_logits": q_halt, "q_continue_logits": q_continue}


def toy_compile_units(model: ToyMixer) -> list[str]:
    return ["inner.mixer"]


# --------------------------------------------------------------------------- the tests


@pytest.fixture(scope="module")
def toy_family():
    family = registry.register(Family("toy_mixer", ToyConfig, ToyMixer, "puzzle",
                                      {"toy_mixer_wide": {"mixer_ratio": 4.0}}, toy_compile_units))
    yield family
    registry.unregister(family.name)


@pytest.fixture(scope="module")
def sudoku_4x4(tmp_path_factory) -> Path:
    return build_small_sudoku(tmp_path_factory.mktemp("toy") / "data", 16, 4, blanks=6, box=(2, 2), seed=0,
                              log=lambda _: None)


@pytest.mark.timeout(120)
def test_a_registered_toy_family_trains_two_steps(toy_family, sudoku_4x4: Path, tmp_path: Path, one_thread):
    cfg = build_config(None, ["arch=toy_mixer_wide", f"data_path={sudoku_4x4}", "model.d_model=16",
                              "model.n_heads=2", "model.puzzle_emb_ndim=16", "global_batch_size=16", "epochs=2",
                              "train.eval_batch_size=4", "train.wandb=off", "ray.num_workers=0",
                              "train.run_name=toy", f"--save_dir={tmp_path}"], aliases=PAPER_FLAGS)
    assert type(cfg.model) is ToyConfig and cfg.model.mixer_ratio == 4.0 and cfg.task == "puzzle"  # the preset
    assert build_config(None, ["arch=toy_mixer_wide", "model.mixer_ratio=3"]).model.mixer_ratio == 3.0
    result = train(cfg)
    assert result.step == 2
    records = [json.loads(line) for line in (tmp_path / "toy" / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["split"] == "train"]
    assert train_records and all(torch.isfinite(torch.tensor(r["loss"])) for r in train_records)
    assert [r["examples"] for r in records if r["split"] == "val"][-1] == 4
    assert (tmp_path / "toy" / "best-model" / "model.safetensors").is_file()


def test_the_toy_family_chooses_its_compile_units(toy_family):
    cfg = registry.default_config("toy_mixer", vocab_size=6, seq_len=4, d_model=8, n_heads=2, puzzle_emb_ndim=8)
    assert compile_units(ACTLossHead(registry.build_model(cfg))) == ["model.inner.mixer"]
