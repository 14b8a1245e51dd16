"""`hrm-ray train --dry_run`: build the model from the config and run one forward/backward; report the
loss terms and diagnostics. No Ray. Each task class has its `dry_run(cfg)` (hrm_ray.train.task_registry): the
LM's runs on a synthetic arithmetic batch (no data on disk, `dry_run` below); the puzzle task's runs one ACT
segment on the first training batch of `data_path`, or on generated Sudoku puzzles when no `data_path` is
given (hrm_ray.train.puzzle_task)."""
from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from typing import Any

import torch

from hrm_ray.config import Config, explicit_fields
from hrm_ray.data.synthetic import arithmetic_pairs, char_tokenizer, make_triplets, pad_batch
from hrm_ray.models.lm import MAMBA_SSM_PATH
from hrm_ray.models.registry import build_model

logger = logging.getLogger(__name__)

DRY_RUN_BATCH = 8  # examples of a dry run unless the command line sets a batch: it must finish on a laptop


def dry_batch(cfg: Config) -> int:
    """The dry run's batch: `--batch_size` when given, else DRY_RUN_BATCH (a task may read its own batch
    fields first: the puzzle task's `dry_batch`). The paper's global batch of 768 on one CPU needs tens of GiB."""
    return cfg.train.batch_size if "batch_size" in explicit_fields(cfg.train) else DRY_RUN_BATCH


def grad_norm(params: list[torch.nn.Parameter]) -> torch.Tensor:
    grads = [p.grad.detach().float().norm() for p in params if p.grad is not None]
    return torch.stack(grads).norm() if grads else torch.zeros(())


def timed_backward(forward: Callable[[], Any], loss_of: Callable[[Any], torch.Tensor]) -> tuple[Any, float]:
    """`forward()`'s output after backward of its loss (`loss_of(output)`), and the seconds both took."""
    start = time.perf_counter()
    out = forward()
    loss_of(out).backward()
    return out, time.perf_counter() - start


def dry_run(cfg: Config, gate_scale: float = 1.0) -> dict[str, float]:
    """One forward/backward of the configured language model (vocab from the synthetic tokenizer) on
    `dry_batch(cfg)` synthetic problems, gate fully open so every loss term and the HRM path run."""
    torch.manual_seed(cfg.train.seed)
    tokenizer = char_tokenizer()
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.vocab_size = tokenizer.get_vocab_size()
    device = torch.device("cuda" if cfg.ray.use_gpu and torch.cuda.is_available() else "cpu")
    model = build_model(model_cfg).to(device)
    pairs = arithmetic_pairs("train", dry_batch(cfg), cfg.data.synthetic_max_operand, seed=cfg.train.seed)
    batch = {k: v.to(device) for k, v in pad_batch(make_triplets(pairs, tokenizer, cfg.data.max_seq_len)).items()}
    out, seconds = timed_backward(lambda: model(batch, gate_scale=gate_scale), lambda o: o.loss)

    hrm_ids = {id(p) for p in model.hrm_parameters()}
    result = {"loss": out.loss, **out.losses, **out.diagnostics, "num_tokens": out.num_tokens,
              "grad_norm": grad_norm(list(model.parameters())),
              "hrm_grad_norm": grad_norm(model.hrm_parameters()),
              "parameters": torch.tensor(sum(p.numel() for p in model.parameters())),
              "hrm_parameters": torch.tensor(sum(p.numel() for p in model.parameters() if id(p) in hrm_ids))}
    result = {k: float(v.detach()) for k, v in result.items()}
    result["seconds"] = seconds
    if model_cfg.encoder_backend == "mamba2":
        result["mamba_ssm_kernel"] = float(model.encoder.kernel_path.endswith(MAMBA_SSM_PATH))
    logger.info("dry run: encoder %s, loss %.4f", model.encoder.kernel_path, result["loss"])
    return result


def format_dry_run(result: dict[str, float], what: str = "a synthetic batch") -> str:
    """The dry run's figures, one per line."""
    lines = [f"dry run: one forward/backward on {what}"]
    if "mamba_ssm_kernel" in result:
        path = "mamba_ssm kernels" if result["mamba_ssm_kernel"] else "PyTorch chunked SSD"
        lines.append(f"  encoder: mamba2 ({path})")
    for key, value in result.items():
        if key == "mamba_ssm_kernel":
            continue
        counts = ("parameters", "hrm_parameters", "puzzle_emb_parameters", "num_tokens", "samples")
        text = f"{int(value):,}" if key in counts else f"{value:.4f}"
        lines.append(f"  {key:<21} {text}")
    return "\n".join(lines)
