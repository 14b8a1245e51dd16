"""Exact match of the HRM x LM on (prompt, answer) pairs, with or without adaptive halting: greedy
answers, the cycles each prompt used, and the effective gate per prompt."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tokenizers import Tokenizer

from hrm_ray.data.synthetic import make_triplets, pad_batch
from hrm_ray.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from hrm_ray.models.lm import HRMLanguageModel


@dataclass
class TaskScore:
    exact: float  # share of answers equal to the reference
    hits: int
    total: int
    answers: list[str]  # greedy answers, in the order of the pairs
    cycles_used: float  # mean HRM cycles per prompt (0 without the HRM)
    gate_mean: float  # mean effective gate over the prompts (0 without the HRM)

    @property
    def distinct_answers(self) -> int:
        return len(set(self.answers))


@torch.no_grad()
def score_pairs(model: HRMLanguageModel, tokenizer: Tokenizer, pairs: list[tuple[str, str]], gate_scale: float,
                adaptive_halting: bool = True, batch_size: int = 256, max_seq_len: int = 256) -> TaskScore:
    """Greedy answers to every prompt of `pairs`, scored against their answers (exact string match)."""
    answers, cycles, gates = [], [], []
    longest = max(len(tokenizer.encode(a, add_special_tokens=False).ids) for _, a in pairs) + 1
    device = next(model.parameters()).device
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        batch = {k: v.to(device) for k, v in pad_batch(make_triplets(chunk, tokenizer, max_seq_len, BOS_ID, EOS_ID),
                                                         PAD_ID).items()}
        result = model.generate(batch["encoder_ids"], batch["encoder_mask"], longest, eos_id=EOS_ID, bos_id=BOS_ID,
                                adaptive_halting=adaptive_halting, gate_scale=gate_scale)
        for i in range(len(chunk)):
            answers.append(tokenizer.decode(result.tokens[i, :int(result.lengths[i])].tolist(),
                                            skip_special_tokens=True))
        cycles.append(result.cycles_used.float())
        out = model.eval()(batch, gate_scale)
        if out.gate is not None:
            gates.append(out.gate.float())
    hits = sum(a.strip() == ref for a, (_, ref) in zip(answers, pairs, strict=True))
    gate = torch.cat(gates).mean().item() if gates else 0.0
    return TaskScore(hits / max(1, len(pairs)), hits, len(pairs), answers, torch.cat(cycles).mean().item(), gate)
