"""What the HRM x LM says about text: the log-likelihood of a continuation given a context, and greedy
continuations cut at stop sequences, both batched.

The encoder reads the context (its last `max_seq_len` tokens), the HRM thinks over it once, and the
decoder scores or writes the continuation after BOS, as in training (data/synthetic.py `make_triplets`).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer

from hrm_ray.data.synthetic import pad_batch
from hrm_ray.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from hrm_ray.errors import UserError
from hrm_ray.models.lm import HRMLanguageModel, memory_bias


@dataclass(frozen=True)
class Thinking:
    """How the model runs at evaluation: gate scale, adaptive halting, H cycles (None: as trained)."""
    gate_scale: float = 1.0
    adaptive_halting: bool = True
    h_cycles: int | None = None
    max_seq_len: int = 256
    batch_size: int = 32


@contextmanager
def cycles(model: HRMLanguageModel, h_cycles: int | None) -> Iterator[None]:
    """Run the HRM for `h_cycles` H cycles inside the block (test-time depth), then as trained."""
    if h_cycles is None or model.hrm is None:
        yield
        return
    if h_cycles < 1:
        raise UserError(f"--h_cycles must be >= 1, got {h_cycles}")
    trained = model.hrm.cfg.h_cycles
    model.hrm.cfg.h_cycles = h_cycles
    try:
        yield
    finally:
        model.hrm.cfg.h_cycles = trained


def encoder_ids(tokenizer: Tokenizer, context: str, max_seq_len: int) -> list[int]:
    """The context's last `max_seq_len` tokens (BOS alone for an empty context)."""
    ids = tokenizer.encode(context, add_special_tokens=False).ids[-max_seq_len:] if context else []
    return ids or [BOS_ID]


def _memory(model: HRMLanguageModel, ids: torch.Tensor, mask: torch.Tensor, how: Thinking):
    """Encoder + HRM + bridge, exactly as `generate` runs them."""
    E = model.encode(ids, mask)
    if model.hrm is None:
        return E, memory_bias(mask, E.dtype)
    thought = model.hrm(E, mask, adaptive=how.adaptive_halting)
    memory, bias, _, _ = model.bridge(E, mask, thought.final, how.gate_scale)
    return memory, bias


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def loglikelihoods(model: HRMLanguageModel, tokenizer: Tokenizer, requests: Sequence[tuple[str, str]],
                   how: Thinking = Thinking()) -> list[tuple[float, bool]]:
    """(sum of log p(continuation | context), whether greedy decoding would write the continuation)."""
    return token_loglikelihoods(model, [(encoder_ids(tokenizer, context, how.max_seq_len),
                                         tokenizer.encode(continuation, add_special_tokens=False).ids)
                                        for context, continuation in requests], how)


@torch.no_grad()
def token_loglikelihoods(model: HRMLanguageModel, requests: Sequence[tuple[list[int], list[int]]],
                         how: Thinking = Thinking()) -> list[tuple[float, bool]]:
    """`loglikelihoods` of (encoder ids, continuation ids) pairs."""
    model.eval()
    out: list[tuple[float, bool]] = []
    with cycles(model, how.h_cycles):
        for start in range(0, len(requests), how.batch_size):
            rows = [{"encoder_ids": context or [BOS_ID], "decoder_input_ids": [BOS_ID, *target[:-1]],
                     "labels": target} for context, target in requests[start:start + how.batch_size]]
            out.extend(_score_rows(model, rows, how))
    return out


def _score_rows(model: HRMLanguageModel, rows: list[dict], how: Thinking) -> list[tuple[float, bool]]:
    batch = {k: v.to(_device(model)) for k, v in pad_batch(rows, PAD_ID).items()}
    memory, bias = _memory(model, batch["encoder_ids"], batch["encoder_mask"].bool(), how)
    logits = model._logits(model.embed(batch["decoder_input_ids"]), memory, bias).float()
    logprobs = torch.log_softmax(logits, dim=-1)
    labels = batch["labels"]
    real = labels >= 0
    picked = logprobs.gather(-1, labels.clamp_min(0)[..., None]).squeeze(-1)
    sums = (picked * real).sum(-1)
    greedy = ((logprobs.argmax(-1) == labels) | ~real).all(-1)
    return [(float(s), bool(g)) for s, g in zip(sums.tolist(), greedy.tolist(), strict=True)]


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """`text` up to the first occurrence of any stop sequence."""
    ends = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return text[:min(ends)] if ends else text


@torch.no_grad()
def generate_texts(model: HRMLanguageModel, tokenizer: Tokenizer, prompts: Sequence[str], max_new_tokens: int,
                   stop: Sequence[str] = (), how: Thinking = Thinking()) -> list[str]:
    """Greedy KV-cached continuations of `prompts`, `how.batch_size` at a time, cut at `stop`."""
    if max_new_tokens <= 0:
        raise UserError(f"--max_new_tokens must be > 0, got {max_new_tokens}")
    ids = [encoder_ids(tokenizer, p, how.max_seq_len) for p in prompts]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # batches of similar lengths: less padding
    texts: list[str] = [""] * len(ids)
    device = _device(model)
    with cycles(model, how.h_cycles):
        for start in range(0, len(order), how.batch_size):
            chunk = order[start:start + how.batch_size]
            batch = pad_batch([{"encoder_ids": ids[i], "decoder_input_ids": [], "labels": []} for i in chunk], PAD_ID)
            result = model.generate(batch["encoder_ids"].to(device), batch["encoder_mask"].to(device),
                                    max_new_tokens, eos_id=EOS_ID, bos_id=BOS_ID,
                                    adaptive_halting=how.adaptive_halting, gate_scale=how.gate_scale)
            for row, i in enumerate(chunk):
                out = result.tokens[row, :int(result.lengths[row])].tolist()
                texts[i] = cut_at_stop(tokenizer.decode(out, skip_special_tokens=True), stop)
    return texts
