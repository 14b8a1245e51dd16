"""`hrm-ray data build-tasks`: a generated reasoning task -> a prepared dataset (no Ray: the rows are few).

train/ and val/ hold the prompt/response triplets training reads; `test.jsonl` holds the held-out
problems as {prompt, response} for exact-match evaluation and is never read by training. With
`--tokenizer` (e.g. the curriculum's tokenizer.json) the dataset mixes with the language data; without,
a character tokenizer is used (the bench's setting).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from tokenizers import Tokenizer

from hrm_ray.data.meta import write_meta
from hrm_ray.data.reasoning_tasks import SUDOKU_BLANKS, task_pairs
from hrm_ray.data.synthetic import char_tokenizer, make_triplets
from hrm_ray.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, load_tokenizer, save_tokenizer
from hrm_ray.data.writer import DatasetWriter, atomic_dir
from hrm_ray.errors import UserError

TEST_FILE = "test.jsonl"


@dataclass
class TaskDatasetReport:
    dest: str
    task: str
    samples: dict[str, int]

    def summary(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in self.samples.items())
        return f"wrote {self.task} to {self.dest} ({counts}; test problems in {TEST_FILE})"


def read_test_pairs(dataset: str | Path) -> list[tuple[str, str]]:
    """The held-out problems of a dataset written by `build_task_dataset`."""
    path = Path(dataset) / TEST_FILE
    if not path.is_file():
        raise UserError(f"{dataset}: no {TEST_FILE} (not written by `hrm-ray data build-tasks`)")
    with open(path) as handle:
        return [(r["prompt"], r["response"]) for r in map(json.loads, handle)]


def build_task_dataset(task: str, dest: str, train: int, val: int, test: int, tokenizer: str | None = None,
                       max_seq_len: int = 256, seed: int = 0, overwrite: bool = False,
                       sudoku_blanks: int = SUDOKU_BLANKS) -> TaskDatasetReport:
    for flag, value in (("--train", train), ("--val", val), ("--test", test)):
        if value < 1:
            raise UserError(f"{flag} must be >= 1, got {value}")
    tok: Tokenizer = load_tokenizer(tokenizer) if tokenizer else char_tokenizer()
    pairs = task_pairs(task, {"train": train, "val": val, "test": test}, seed, sudoku_blanks=sudoku_blanks)
    with atomic_dir(dest, overwrite, "--dest") as tmp:
        sha = save_tokenizer(tok, tmp / "tokenizer.json")
        writer = DatasetWriter(tmp)
        for split in ("train", "val"):
            rows = make_triplets(pairs[split], tok, max_seq_len, BOS_ID, EOS_ID)
            writer.write(split, pa.Table.from_pylist(rows))
        writer.close()
        with open(tmp / TEST_FILE, "w") as handle:
            for prompt, response in pairs["test"]:
                handle.write(json.dumps({"prompt": prompt, "response": response}) + "\n")
        write_meta(tmp, {
            "vocab_size": tok.get_vocab_size(), "pad_id": PAD_ID, "bos_id": BOS_ID, "eos_id": EOS_ID,
            "max_seq_len": max_seq_len, "train_samples": train, "val_samples": val, "test_samples": test,
            "tokenizer_sha256": sha, "mode": "prompt_response", "task": task, "seed": seed,
            **({"sudoku_blanks": sudoku_blanks} if task == "sudoku6" else {}),
            "shards": writer.files(), "created_by": "hrm-ray data build-tasks",
        })
    return TaskDatasetReport(str(dest), task, {"train": train, "val": val, "test": test})
