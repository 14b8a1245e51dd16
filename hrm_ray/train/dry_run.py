"""`hrm-ray train --dry_run`: build the model from the config and run one forward/backward on a
synthetic arithmetic batch; report the loss terms and diagnostics. No Ray, no data on disk."""
from __future__ import annotations

import copy
import logging
import time

import torch

from hrm_ray.config import Config
from hrm_ray.data.synthetic import arithmetic_pairs, char_tokenizer, make_triplets, pad_batch
from hrm_ray.models import HRMLanguageModel
from hrm_ray.models.mamba2 import MAMBA_SSM_PATH

logger = logging.getLogger(__name__)


def _grad_norm(params: list[torch.nn.Parameter]) -> torch.Tensor:
    grads = [p.grad.detach().float().norm() for p in params if p.grad is not None]
    return torch.stack(grads).norm() if grads else torch.zeros(())


def dry_run(cfg: Config, gate_scale: float = 1.0) -> dict[str, float]:
    """One forward/backward of the configured model (vocab from the synthetic tokenizer) on
    `train.batch_size` synthetic problems, gate fully open so every loss term and the HRM path run."""
    torch.manual_seed(cfg.train.seed)
    tokenizer = char_tokenizer()
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.vocab_size = tokenizer.get_vocab_size()
    device = torch.device("cuda" if cfg.ray.use_gpu and torch.cuda.is_available() else "cpu")
    model = HRMLanguageModel(model_cfg).to(device)
    pairs = arithmetic_pairs("train", cfg.train.batch_size, cfg.data.synthetic_max_operand, seed=cfg.train.seed)
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


def format_dry_run(result: dict[str, float]) -> str:
    """The dry run's figures, one per line."""
    lines = ["dry run: one forward/backward on a synthetic batch"]
    if "mamba_ssm_kernel" in result:
        path = "mamba_ssm kernels" if result["mamba_ssm_kernel"] else "PyTorch chunked SSD"
        lines.append(f"  encoder: mamba2 ({path})")
    for key, value in result.items():
        if key == "mamba_ssm_kernel":
            continue
        text = f"{int(value):,}" if key in ("parameters", "hrm_parameters", "num_tokens") else f"{value:.4f}"
        lines.append(f"  {key:<18} {text}")
    return "\n".join(lines)
