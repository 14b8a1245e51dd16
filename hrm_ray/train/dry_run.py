"""`hrm-ray train --dry_run`: build the model from the config and run one forward/backward; report the
loss terms and diagnostics. No Ray. The LM runs on a synthetic arithmetic batch (no data on disk); the
puzzle HRM (`task=puzzle`) runs one ACT segment on the first training batch of `data_path`, or on
generated Sudoku puzzles when no `data_path` is given."""
from __future__ import annotations

import copy
import logging
import time

import torch

from hrm_ray.config import Config, dataset_given, explicit_fields
from hrm_ray.data.synthetic import arithmetic_pairs, char_tokenizer, make_triplets, pad_batch
from hrm_ray.models.hrm_lm import HRMLanguageModel
from hrm_ray.models.hrm_lm.mamba2 import MAMBA_SSM_PATH

logger = logging.getLogger(__name__)

DRY_RUN_BATCH = 8  # examples of a dry run unless the command line sets a batch: it must finish on a laptop


def dry_batch(cfg: Config) -> int:
    """The dry run's batch: `--batch_size` when given; for a puzzle model a given `global_batch_size` (one
    worker's share); else DRY_RUN_BATCH. The paper's global batch of 768 on one CPU needs tens of GiB."""
    given = explicit_fields(cfg.train)
    if "batch_size" in given:
        return cfg.train.batch_size
    if cfg.task == "puzzle" and "global_batch_size" in given:
        from hrm_ray.data.puzzles.sampler import local_batch_size
        from hrm_ray.errors import UserError

        try:
            return local_batch_size(cfg.train.global_batch_size, max(1, cfg.ray.num_workers))
        except ValueError as exc:
            raise UserError(f"global_batch_size: {exc}") from None
    return DRY_RUN_BATCH


def _grad_norm(params: list[torch.nn.Parameter]) -> torch.Tensor:
    grads = [p.grad.detach().float().norm() for p in params if p.grad is not None]
    return torch.stack(grads).norm() if grads else torch.zeros(())


def dry_run(cfg: Config, gate_scale: float = 1.0) -> dict[str, float]:
    """One forward/backward of the configured model (vocab from the synthetic tokenizer) on
    `dry_batch(cfg)` synthetic problems, gate fully open so every loss term and the HRM path run."""
    torch.manual_seed(cfg.train.seed)
    tokenizer = char_tokenizer()
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.vocab_size = tokenizer.get_vocab_size()
    device = torch.device("cuda" if cfg.ray.use_gpu and torch.cuda.is_available() else "cpu")
    model = HRMLanguageModel(model_cfg).to(device)
    pairs = arithmetic_pairs("train", dry_batch(cfg), cfg.data.synthetic_max_operand, seed=cfg.train.seed)
    batch = {k: v.to(device) for k, v in pad_batch(make_triplets(pairs, tokenizer, cfg.data.max_seq_len)).items()}

    start = time.perf_counter()
    out = model(batch, gate_scale=gate_scale)
    out.loss.backward()
    seconds = time.perf_counter() - start

    hrm_ids = {id(p) for p in model.hrm_parameters()}
    result = {"loss": out.loss, **out.losses, **out.diagnostics, "num_tokens": out.num_tokens,
              "grad_norm": _grad_norm(list(model.parameters())),
              "hrm_grad_norm": _grad_norm(model.hrm_parameters()),
              "parameters": torch.tensor(sum(p.numel() for p in model.parameters())),
              "hrm_parameters": torch.tensor(sum(p.numel() for p in model.parameters() if id(p) in hrm_ids))}
    result = {k: float(v.detach()) for k, v in result.items()}
    result["seconds"] = seconds
    if model_cfg.encoder_backend == "mamba2":
        result["mamba_ssm_kernel"] = float(model.encoder.kernel_path.endswith(MAMBA_SSM_PATH))
    logger.info("dry run: encoder %s, loss %.4f", model.encoder.kernel_path, result["loss"])
    return result


DRY_RUN_BLANKS = 40


def puzzle_dry_run(cfg: Config) -> dict[str, float]:
    """One training segment (forward/backward from a fresh carry) of the configured puzzle model on a batch of
    `dry_batch(cfg)` examples."""
    from hrm_ray.data.puzzles.demo import sudoku_batch
    from hrm_ray.data.puzzles.sudoku import sudoku_metadata
    from hrm_ray.models.hrm_act_v1 import puzzle_embeddings
    from hrm_ray.train.puzzle_task import PuzzleTask, build_puzzle_model, resolve_model
    from hrm_ray.train.resolve import resolve_config
    from hrm_ray.train.task import WorkerContext

    torch.manual_seed(cfg.train.seed)
    size = dry_batch(cfg)
    if dataset_given(cfg.data.dataset):
        cfg = copy.deepcopy(cfg)
        cfg.train.global_batch_size, cfg.ray.num_workers = size, 1
        task = PuzzleTask(resolve_config(cfg))
        model, batch = task.build_model(), task.train_feed(WorkerContext()).next_batch()
    else:
        model = build_puzzle_model(resolve_model(cfg.model, sudoku_metadata(size)))
        batch = sudoku_batch(size, DRY_RUN_BLANKS, seed=cfg.train.seed)
    device = torch.device("cuda" if cfg.ray.use_gpu and torch.cuda.is_available() else "cpu")
    model.to(device).train()
    batch = {k: v.to(device) for k, v in batch.items()}

    start = time.perf_counter()
    _, loss, sums, _ = model(model.initial_carry(batch), batch)
    loss.backward()
    seconds = time.perf_counter() - start

    samples, embeddings = sums["samples"], puzzle_embeddings(model)
    result = {"loss": loss, **{k: v / samples for k, v in sums.items() if k.endswith("_loss") or k.startswith("gate_")},
              "samples": samples, "grad_norm": _grad_norm(list(model.parameters())),
              "parameters": torch.tensor(sum(p.numel() for p in model.parameters())),
              "puzzle_emb_parameters": torch.tensor(sum(e.weights.numel() for e in embeddings))}
    if embeddings:  # the table is a buffer: its looked-up rows are the leaf sign-SGD reads the gradient of
        result["puzzle_emb_grad_norm"] = _grad_norm([e.local for e in embeddings if e.local is not None])
    result = {k: float(v.detach()) for k, v in result.items()}
    result["seconds"] = seconds
    logger.info("puzzle dry run: %s, loss %.4f", cfg.model.name, result["loss"])
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
