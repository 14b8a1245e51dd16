"""Byte-level BPE tokenizer (Hugging Face `tokenizers`) with the project's fixed specials.

Byte-level pre-tokenization keeps every byte, so decode(encode(x)) == x for any text,
spacing, newlines and indentation included.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from hrm_ray.errors import UserError

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3


@contextmanager
def _tokenizer_threads(num_threads: int | None):
    """Let the Rust side use `num_threads` threads (None: all cores) for the duration."""
    saved = {k: os.environ.get(k) for k in ("TOKENIZERS_PARALLELISM", "RAYON_NUM_THREADS")}
    os.environ["TOKENIZERS_PARALLELISM"] = "false" if num_threads == 1 else "true"
    if num_threads:
        os.environ["RAYON_NUM_THREADS"] = str(num_threads)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def train_tokenizer(texts: Iterable[str], vocab_size: int, num_threads: int | None = None) -> Tokenizer:
    """Train a byte-level BPE on `texts`; deterministic for the same texts in the same order."""
    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise UserError(f"--vocab-size {vocab_size} is too small: byte-level BPE needs at least "
                        f"{256 + len(SPECIAL_TOKENS)}")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    with _tokenizer_threads(num_threads):
        tok.train_from_iterator(texts, trainer)
    check_specials(tok, "trained tokenizer")
    return tok


def check_specials(tok: Tokenizer, where: str) -> None:
    """Every tokenizer we use must map <pad> <bos> <eos> <unk> to 0 1 2 3."""
    for expected, token in enumerate(SPECIAL_TOKENS):
        got = tok.token_to_id(token)
        if got != expected:
            raise UserError(f"{where}: special token {token} has id {got}, expected {expected} "
                            f"(specials must be {', '.join(SPECIAL_TOKENS)} = 0..3)")


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a tokenizer.json (or a directory holding one) and check its specials."""
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise UserError(f"tokenizer not found: {path}")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on bad JSON
        raise UserError(f"cannot read tokenizer {path}: {exc}") from exc
    check_specials(tok, str(path))
    return tok


def save_tokenizer(tok: Tokenizer, path: str | Path) -> str:
    """Write tokenizer.json and return its sha256."""
    Path(path).write_text(tok.to_str(), encoding="utf-8")
    return file_sha256(path)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
