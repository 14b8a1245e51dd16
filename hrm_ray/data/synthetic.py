"""Synthetic tasks that need no downloaded data: arithmetic ("What is 12 + 7?" -> "19") and
multi-step reasoning chains, a character-level tokenizer, triplets and padded batches.

Splits are decided by a hash of the problem text, so a val/test problem never appears in
training however many samples are drawn.
"""
from __future__ import annotations

import random
from collections.abc import Sequence

import torch
from tokenizers import Tokenizer, decoders, models

from hrm_ray.data.split import is_val
from hrm_ray.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, SPECIAL_TOKENS, check_specials
from hrm_ray.errors import UserError

SPLITS = ("train", "val", "test")
OPERATORS = ("+", "-")
CHARACTERS = "".join(chr(c) for c in range(32, 127)) + "\n"  # printable ASCII and newline
IGNORE_INDEX = -100


def char_tokenizer() -> Tokenizer:
    """A Hugging Face tokenizer with one token per character (specials 0..3, then CHARACTERS).

    A BPE model without merges or pre-tokenizer splits text into single characters, and the
    Fuse decoder joins them back, so decode(encode(x)) == x for text made of CHARACTERS.
    """
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    vocab.update((ch, len(SPECIAL_TOKENS) + i) for i, ch in enumerate(CHARACTERS))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    tok.decoder = decoders.Fuse()
    check_specials(tok, "character tokenizer")
    return tok


def split_of(problem: str, val_ratio: float, test_ratio: float, seed: int) -> str:
    """'train', 'val' or 'test' for a problem text, fixed by its hash."""
    if is_val(problem, test_ratio, seed + 1):
        return "test"
    return "val" if is_val(problem, val_ratio, seed) else "train"


def arithmetic_problem(a: int, op: str, b: int) -> tuple[str, str]:
    value = a + b if op == "+" else a - b
    return f"What is {a} {op} {b}?", str(value)


def arithmetic_pairs(split: str, num_samples: int, max_operand: int = 99, seed: int = 0,
                     val_ratio: float = 0.05, test_ratio: float = 0.05,
                     operators: Sequence[str] = OPERATORS) -> list[tuple[str, str]]:
    """`num_samples` (prompt, answer) pairs of `split`, operands in [0, max_operand]. Every problem
    of the split appears once (in a seeded order) before any repeats."""
    _check_split(split)
    if max_operand < 0:
        raise UserError(f"synthetic_max_operand must be >= 0, got {max_operand}")
    bad = [op for op in operators if op not in OPERATORS]
    if bad:
        raise UserError(f"synthetic operators: unsupported {bad} (use {', '.join(OPERATORS)})")
    problems = [arithmetic_problem(a, op, b) for a in range(max_operand + 1)
                for op in operators for b in range(max_operand + 1)]
    problems = [p for p in problems if split_of(p[0], val_ratio, test_ratio, seed) == split]
    if not problems:
        raise UserError(f"synthetic arithmetic: no {split} problems with max_operand={max_operand} "
                        f"(raise synthetic_max_operand or the {split} ratio)")
    rng = random.Random(f"arithmetic-{seed}-{split}")
    rng.shuffle(problems)
    return [problems[i % len(problems)] for i in range(num_samples)]


def chain_problem(numbers: Sequence[int], ops: Sequence[str]) -> tuple[str, str]:
    """'What is 12 + 7 - 5?' -> '12 + 7 = 19. 19 - 5 = 14. The answer is 14.'"""
    question = " ".join([str(numbers[0])] + [f"{op} {n}" for op, n in zip(ops, numbers[1:], strict=True)])
    steps, total = [], numbers[0]
    for op, n in zip(ops, numbers[1:], strict=True):
        new = total + n if op == "+" else total - n
        steps.append(f"{total} {op} {n} = {new}.")
        total = new
    return f"What is {question}?", " ".join(steps) + f" The answer is {total}."


def reasoning_chain_pairs(split: str, num_samples: int, max_operand: int = 99, terms: int = 3, seed: int = 0,
                          val_ratio: float = 0.05, test_ratio: float = 0.05) -> list[tuple[str, str]]:
    """Multi-step arithmetic with a worked chain as the answer; problems drawn at random and kept
    when their hash falls in `split`."""
    _check_split(split)
    if terms < 2:
        raise UserError(f"reasoning chains need at least 2 terms, got {terms}")
    rng = random.Random(f"chain-{seed}-{split}")
    out: list[tuple[str, str]] = []
    for _ in range(200 * max(num_samples, 1)):
        if len(out) == num_samples:
            break
        numbers = [rng.randint(0, max_operand) for _ in range(terms)]
        pair = chain_problem(numbers, [rng.choice(OPERATORS) for _ in range(terms - 1)])
        if split_of(pair[0], val_ratio, test_ratio, seed) == split:
            out.append(pair)
    if len(out) < num_samples:
        raise UserError(f"reasoning chains: could not draw {num_samples} {split} problems "
                        f"(max_operand={max_operand} is too small)")
    return out


def make_triplets(pairs: Sequence[tuple[str, str]], tokenizer: Tokenizer, max_seq_len: int = 256,
                  bos_id: int = BOS_ID, eos_id: int = EOS_ID) -> list[dict[str, list[int]]]:
    """(prompt, answer) pairs -> rows {encoder_ids, decoder_input_ids, labels}. The encoder reads only
    the prompt (its last max_seq_len tokens); decoder_input_ids = BOS + answer, labels = answer + EOS."""
    rows = []
    for prompt, answer in pairs:
        enc = tokenizer.encode(prompt, add_special_tokens=False).ids[-max_seq_len:]
        target = tokenizer.encode(answer, add_special_tokens=False).ids[:max_seq_len - 1]
        rows.append({"encoder_ids": enc, "decoder_input_ids": [bos_id, *target], "labels": [*target, eos_id]})
    return rows


def pad_batch(rows: Sequence[dict[str, Sequence[int]]], pad_id: int = PAD_ID) -> dict[str, torch.Tensor]:
    """Right-pad rows into the LM batch: encoder_ids, encoder_mask, decoder_input_ids, labels (-100
    padding), decoder_mask; masks are bool, True = real token."""
    if not rows:
        raise ValueError("pad_batch: no rows")

    def pad(key: str, value: int) -> tuple[torch.Tensor, torch.Tensor]:
        seqs = [list(row[key]) for row in rows]
        width = max(1, max(len(s) for s in seqs))
        ids = torch.full((len(seqs), width), value, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.bool)
        for i, s in enumerate(seqs):
            ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, :len(s)] = True
        return ids, mask

    encoder_ids, encoder_mask = pad("encoder_ids", pad_id)
    decoder_input_ids, decoder_mask = pad("decoder_input_ids", pad_id)
    labels, _ = pad("labels", IGNORE_INDEX)
    return {"encoder_ids": encoder_ids, "encoder_mask": encoder_mask, "decoder_input_ids": decoder_input_ids,
            "labels": labels, "decoder_mask": decoder_mask}


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise UserError(f"synthetic split: unknown '{split}' (use {', '.join(SPLITS)})")
