"""The demo profile's data, built by the job itself from text that ships with Python.

    demo_data/
      tokenizer.json          one byte-level BPE trained on all three sources
      language/  math/  code/ prepared datasets (train/ val/ Parquet, tokenizer.json, meta.json)
      sudoku6/  arith/  graph/  the generated reasoning tasks (`hrm-ray data build-tasks`), a few hundred each
      math_dev.jsonl          held-out word problems (prompt/response, `#### n`): the stages' `eval:` dev file

language (pydoc topics, standard-library docstrings) is prepared in `continuation` mode, math (worked
word problems) and code (signature + docstring -> body) in `prompt_response` mode, the reasoning tasks
as prompt/response too, all with the one tokenizer, so `--dataset demo_data/language:0.9,demo_data/math:0.05,
demo_data/code:0.05` (or Stage C's mix with the reasoning tasks) mixes them. Everything is built in a
hidden directory beside the destination and renamed into place when whole; demo data built before the
reasoning tasks existed gets them added beside the others, with its own tokenizer.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hrm_ray.data.demo_corpus import math_problems, write_demo_sources, write_jsonl
from hrm_ray.data.prepare import PrepareConfig, prepare_language_dataset, tokenizer_sample
from hrm_ray.data.records import find_files
from hrm_ray.data.sources import ExtractOptions
from hrm_ray.data.task_dataset import build_task_dataset
from hrm_ray.data.tokenizer import save_tokenizer, train_tokenizer
from hrm_ray.errors import UserError

SOURCE_MODES = {"language": "continuation", "math": "prompt_response", "code": "prompt_response"}
REASONING_TASKS = ("sudoku6", "arith", "graph")
DEMO_SOURCES = (*SOURCE_MODES, *REASONING_TASKS)
TOKENIZER_FILE = "tokenizer.json"
MATH_DEV_FILE = "math_dev.jsonl"
MATH_DEV_PROBLEMS = 200


@dataclass(frozen=True)
class DemoDataSpec:
    vocab_size: int = 2048
    max_seq_len: int = 64
    math_count: int = 3000
    val_ratio: float = 0.05
    task_counts: tuple[int, int, int] = (400, 20, 50)  # train/val/test problems of each reasoning task
    tokenizer_sample_chars: int = 3_000_000
    seed: int = 0


def demo_data_complete(root: str | Path, names: tuple[str, ...] = DEMO_SOURCES) -> bool:
    root = Path(root)
    return all((root / name / "meta.json").is_file() for name in names)


def build_demo_data(root: str | Path, spec: DemoDataSpec = DemoDataSpec(), log=print) -> dict[str, Path]:
    """Build the six demo datasets under `root` (absolute paths returned); a no-op when complete."""
    root = Path(root).absolute()
    paths = {name: root / name for name in DEMO_SOURCES}
    if demo_data_complete(root, tuple(SOURCE_MODES)) and (root / TOKENIZER_FILE).is_file():
        build_reasoning_tasks(root, root / TOKENIZER_FILE, spec, log)  # the ones missing, if any
        write_math_dev(root, spec)
        return paths
    if root.exists() and any(root.iterdir()):
        raise UserError(f"{root} exists but is not complete demo data (no {'/'.join(SOURCE_MODES)} with meta.json): "
                        f"remove it to rebuild, or point the dataset elsewhere")
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.tmp-"))
    try:
        log(f"building demo data in {root} (sources from the Python install; one tokenizer, "
            f"vocab {spec.vocab_size})")
        sources = write_demo_sources(staging / "sources", math_count=spec.math_count, seed=spec.seed)
        tokenizer = _train_shared_tokenizer(sources, spec, staging / TOKENIZER_FILE)
        for name, mode in SOURCE_MODES.items():
            report = prepare_language_dataset(PrepareConfig(
                source=[str(sources[name])], dest=str(staging / name), tokenizer=str(tokenizer),
                vocab_size=spec.vocab_size, max_seq_len=spec.max_seq_len, val_ratio=spec.val_ratio, mode=mode,
                seed=spec.seed, tokenizer_workers=1))
            log(f"  {name} ({mode}): train {report.samples['train']}, val {report.samples['val']} samples")
        build_reasoning_tasks(staging, tokenizer, spec, log)
        write_math_dev(staging, spec)
        shutil.rmtree(staging / "sources")
        os.chmod(staging, 0o755)
        if root.exists():
            root.rmdir()
        os.replace(staging, root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return paths


def build_reasoning_tasks(root: Path, tokenizer: Path, spec: DemoDataSpec, log=print) -> None:
    """The generated reasoning tasks missing under `root`, prepared with the demo's tokenizer."""
    train, val, test = spec.task_counts
    for task in REASONING_TASKS:
        if not (root / task / "meta.json").is_file():
            build_task_dataset(task, str(root / task), train, val, test, str(tokenizer), spec.max_seq_len, spec.seed)
            log(f"  {task} (prompt_response): train {train}, val {val} samples, test {test} held out")


def write_math_dev(root: Path, spec: DemoDataSpec = DemoDataSpec()) -> Path:
    """root/math_dev.jsonl, when missing: word problems of the math source's generator drawn with another seed,
    which task evaluations during training score by their `#### n` answer (`eval: tasks: [gsm8k=...]`)."""
    path = Path(root) / MATH_DEV_FILE
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(math_problems(MATH_DEV_PROBLEMS, seed=spec.seed + 1), path)
    return path


def _train_shared_tokenizer(sources: dict[str, Path], spec: DemoDataSpec, dest: Path) -> Path:
    """One BPE over an equal share of every source's text (prompts and responses included)."""
    files = find_files([str(sources[name]) for name in SOURCE_MODES])
    texts = tokenizer_sample(files, ExtractOptions(mode="auto"), spec.tokenizer_sample_chars, None)
    save_tokenizer(train_tokenizer(texts, spec.vocab_size), dest)
    return dest
