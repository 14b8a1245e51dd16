"""lm-evaluation-harness model `hrm-ray`: a trained HRM x LM run behind `lm_eval.api.model.LM`.

    hrm-ray lm-eval --model hrm-ray --model_args run=NAME,gate_scale=1.0 --tasks arc_easy
    import hrm_ray.infer.harness; lm_eval.simple_evaluate(model="hrm-ray", model_args="run=NAME", ...)

The encoder reads the request's context, the decoder scores (`loglikelihood`) or writes greedily
(`generate_until`, cut at the request's `until` strings, at most `max_gen_toks` tokens) its continuation.
Model arguments: run= (under save_dir=) or checkpoint=, gate_scale=, adaptive_halting=, h_cycles=,
batch_size=, device=. lm_eval is the optional `[eval]` extra: importing this module without it is one line.
"""
from __future__ import annotations

import logging
from typing import Any

from hrm_ray.errors import UserError
from hrm_ray.evals.scoring import Thinking, generate_texts, loglikelihoods, token_loglikelihoods
from hrm_ray.infer.loading import load_for_inference

try:
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
except ImportError as exc:  # the optional extra
    raise UserError("lm-evaluation-harness is not installed: pip install 'hrm-ray[eval]'") from exc

logger = logging.getLogger(__name__)
MODEL_NAME = "hrm-ray"
DEFAULT_BATCH = 32
DEFAULT_GEN_TOKENS = 256


def _batch_size(value: Any) -> int:
    """lm_eval's --batch_size: a number, or 'auto' (-> DEFAULT_BATCH)."""
    if value is None or str(value).startswith("auto"):
        return DEFAULT_BATCH
    try:
        size = int(value)
    except ValueError:
        raise UserError(f"hrm-ray model: batch_size must be a number or 'auto', got {value!r}") from None
    if size <= 0:
        raise UserError(f"hrm-ray model: batch_size must be > 0, got {size}")
    return size


def _flag(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes")


@register_model(MODEL_NAME)
class HRMRayLM(LM):
    def __init__(self, run: str | None = None, checkpoint: str | None = None, save_dir: str = "",
                 gate_scale: float = 1.0, adaptive_halting: bool | str = True, h_cycles: int | None = None,
                 batch_size: int | str | None = DEFAULT_BATCH, device: str | None = None,
                 max_batch_size: int | None = None, **unknown: Any) -> None:
        super().__init__()
        if unknown:
            raise UserError(f"hrm-ray model: unknown model_args {sorted(unknown)} (known: run, checkpoint, "
                            "save_dir, gate_scale, adaptive_halting, h_cycles, batch_size, device)")
        import torch

        if not device or (str(device).startswith("cuda") and not torch.cuda.is_available()):
            if device:  # lm_eval's command line asks for cuda unless told otherwise
                logger.warning("hrm-ray model: %s is not available; running on the CPU", device)
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.loaded = load_for_inference(str(run) if run else None, save_dir, checkpoint, device)
        self.how = Thinking(float(gate_scale), _flag(adaptive_halting), int(h_cycles) if h_cycles else None,
                            self.loaded.config.data.max_seq_len, _batch_size(batch_size))

    @property
    def model(self):
        return self.loaded.model

    @property
    def tokenizer(self):
        return self.loaded.tokenizer

    def loglikelihood(self, requests: list, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        return loglikelihoods(self.model, self.tokenizer, [tuple(r.args[:2]) for r in requests], self.how)

    def loglikelihood_rolling(self, requests: list, disable_tqdm: bool = False) -> list[float]:
        """A whole text's log-likelihood, window by window: the encoder reads the previous `max_seq_len`
        tokens, the decoder scores the next `max_seq_len`."""
        width, out = self.how.max_seq_len, []
        for request in requests:
            ids = self.tokenizer.encode(request.args[0], add_special_tokens=False).ids
            pieces = [(ids[max(0, i - width):i], ids[i:i + width]) for i in range(0, len(ids), width)]
            out.append(sum(logprob for logprob, _ in token_loglikelihoods(self.model, pieces, self.how)))
        return out

    def generate_until(self, requests: list, disable_tqdm: bool = False) -> list[str]:
        """Greedy continuations; requests with the same `until` and `max_gen_toks` share batches."""
        groups: dict[tuple[tuple[str, ...], int], list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(self._generation_kwargs(request.args[1]), []).append(i)
        out: list[str] = [""] * len(requests)
        for (until, max_tokens), members in groups.items():
            prompts = [requests[i].args[0] for i in members]
            for i, text in zip(members, generate_texts(self.model, self.tokenizer, prompts, max_tokens, until,
                                                       self.how), strict=True):
                out[i] = text
        return out

    @staticmethod
    def _generation_kwargs(kwargs: dict[str, Any]) -> tuple[tuple[str, ...], int]:
        until = kwargs.get("until") or ()
        until = (until,) if isinstance(until, str) else tuple(until)
        if kwargs.get("do_sample") or float(kwargs.get("temperature") or 0.0) > 0:
            logger.warning("hrm-ray model: sampling requested; generating greedily")
        return until, int(kwargs.get("max_gen_toks") or DEFAULT_GEN_TOKENS)


def run_lm_eval_cli(argv: list[str]) -> int:
    """lm_eval's command line on `argv`, with this module's model registered; its exit status."""
    import sys

    from lm_eval.__main__ import cli_evaluate

    saved = sys.argv
    sys.argv = ["lm_eval", *argv]
    try:
        cli_evaluate()
    except SystemExit as exc:  # lm_eval's argparse: --help, a bad flag
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    finally:
        sys.argv = saved
    return 0
