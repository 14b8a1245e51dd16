"""Text in, text out: tokenize prompts, batch them, run `HRMLanguageModel.generate`, decode."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tokenizers import Tokenizer

from hrm_ray.data.synthetic import pad_batch
from hrm_ray.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from hrm_ray.errors import UserError
from hrm_ray.models.lm import HRMLanguageModel


@dataclass
class Completion:
    prompt: str
    text: str
    token_ids: list[int]
    cycles_used: int


def check_sampling(max_new_tokens: int, temperature: float, top_k: int, top_p: float) -> None:
    if max_new_tokens <= 0:
        raise UserError(f"--max_new_tokens must be > 0, got {max_new_tokens}")
    if temperature < 0:
        raise UserError(f"--temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k < 0:
        raise UserError(f"--top_k must be >= 0 (0 = off), got {top_k}")
    if not 0.0 < top_p <= 1.0:
        raise UserError(f"--top_p must be in (0, 1], got {top_p}")


def complete(model: HRMLanguageModel, tokenizer: Tokenizer, prompts: list[str], max_new_tokens: int = 64, *,
             temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, seed: int | None = None,
             use_cache: bool = True, adaptive_halting: bool = True, max_prompt_len: int = 0) -> list[Completion]:
    """Complete every prompt in one batch (prompts keep their last `max_prompt_len` tokens if > 0)."""
    if not prompts:
        raise UserError("--prompt: give at least one prompt")
    check_sampling(max_new_tokens, temperature, top_k, top_p)
    rows = []
    for prompt in prompts:
        ids = tokenizer.encode(prompt, add_special_tokens=False).ids
        if not ids:
            raise UserError(f"--prompt: {prompt!r} has no tokens")
        rows.append({"encoder_ids": ids[-max_prompt_len:] if max_prompt_len > 0 else ids,
                     "decoder_input_ids": [], "labels": []})
    batch = pad_batch(rows, PAD_ID)
    device = next(model.parameters()).device
    generator = None
    if seed is not None and temperature > 0:
        generator = torch.Generator(device=device).manual_seed(seed)
    result = model.generate(batch["encoder_ids"].to(device), batch["encoder_mask"].to(device), max_new_tokens,
                            temperature=temperature, top_k=top_k, top_p=top_p, eos_id=EOS_ID, bos_id=BOS_ID,
                            use_cache=use_cache, adaptive_halting=adaptive_halting, generator=generator)
    out = []
    for i, prompt in enumerate(prompts):
        ids = result.tokens[i, :int(result.lengths[i])].tolist()
        out.append(Completion(prompt, tokenizer.decode(ids, skip_special_tokens=True), ids,
                              int(result.cycles_used[i])))
    return out
