"""Mazes in the paper's layout -> the puzzle format, plus a generator for demos and tests.

CSV rows `source,question,answer,rating`: question and answer are n*n characters of a square
grid ("#" wall, " " open, "S" start, "G" goal, "o" the shortest path in the answer). Tokens are
the charset index + 1 (vocab 6, pad 0). With `aug`, each training maze is a group of its 8
dihedral transforms.
"""
from __future__ import annotations

import csv
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hrm_ray.data.puzzles.arc import dihedral
from hrm_ray.data.puzzles.format import paper_csv_rows

CHARSET = "# SGo"
VOCAB_SIZE = len(CHARSET) + 1
_CHAR_TO_ID = np.zeros(256, dtype=np.uint8)
_CHAR_TO_ID[[ord(ch) for ch in CHARSET]] = np.arange(1, len(CHARSET) + 1)


def encode(text: str, where: str) -> np.ndarray:
    raw = np.frombuffer(text.encode("ascii", errors="replace"), dtype=np.uint8)
    ids = _CHAR_TO_ID[raw]
    if np.any(ids == 0):
        bad = sorted({chr(c) for c in raw[ids == 0]})
        raise ValueError(f"{where}: characters {bad} are not in the maze charset {CHARSET!r}")
    return ids


def read_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """-> inputs, labels as token grids [N, n, n]."""
    inputs, labels, side = [], [], None
    for where, q, a, _ in paper_csv_rows(path, "maze"):
        n = int(round(len(q) ** 0.5))
        if n * n != len(q) or len(a) != len(q):
            raise ValueError(f"{where}: question and answer must be the same square grid "
                             f"(got {len(q)} and {len(a)} characters)")
        if side is None:
            side = n
        elif n != side:
            raise ValueError(f"{where}: grid side {n} differs from the first row's {side}")
        inputs.append(encode(q, where).reshape(n, n))
        labels.append(encode(a, where).reshape(n, n))
    if not inputs:
        raise ValueError(f"{path}: no mazes")
    return np.stack(inputs), np.stack(labels)


def generate_maze(side: int, rng: np.random.Generator) -> tuple[str, str]:
    """A random perfect maze (depth-first carving) with S and G far apart; returns (question, answer)."""
    if side < 5:
        raise ValueError("maze side must be >= 5")
    g = np.full((side, side), "#", dtype="<U1")
    cells = (side - 1) // 2
    stack, seen = [(0, 0)], {(0, 0)}
    g[1, 1] = " "
    while stack:
        r, c = stack[-1]
        nbrs = [(r + dr, c + dc) for dr, dc in ((0, 1), (1, 0), (0, -1), (-1, 0))
                if 0 <= r + dr < cells and 0 <= c + dc < cells and (r + dr, c + dc) not in seen]
        if not nbrs:
            stack.pop()
            continue
        nr, nc = nbrs[rng.integers(len(nbrs))]
        g[2 * r + 1 + (nr - r), 2 * c + 1 + (nc - c)] = " "
        g[2 * nr + 1, 2 * nc + 1] = " "
        seen.add((nr, nc))
        stack.append((nr, nc))
    start, goal = (1, 1), (2 * cells - 1, 2 * cells - 1)
    path = shortest_path(g != "#", start, goal)
    g[start], g[goal] = "S", "G"
    question = "".join(g.reshape(-1))
    for p in path[1:-1]:
        g[p] = "o"
    return question, "".join(g.reshape(-1))


def shortest_path(open_mask: np.ndarray, start: tuple[int, int], goal: tuple[int, int]) -> list[tuple[int, int]]:
    prev = {start: start}
    queue = deque([start])
    while queue:
        cur = queue.popleft()
        if cur == goal:
            break
        r, c = cur
        for nxt in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
            if (0 <= nxt[0] < open_mask.shape[0] and 0 <= nxt[1] < open_mask.shape[1]
                    and open_mask[nxt] and nxt not in prev):
                prev[nxt] = cur
                queue.append(nxt)
    if goal not in prev:
        raise ValueError("maze has no path from start to goal")
    path = [goal]
    while path[-1] != start:
        path.append(prev[path[-1]])
    return path[::-1]


def write_csv(path: str | Path, mazes: list[tuple[str, str]], source: str = "generated") -> None:
    with Path(path).open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["source", "question", "answer", "rating"])
        for q, a in mazes:
            w.writerow([source, q, a, 0])


@dataclass
class MazeBuildConfig:
    output_dir: str
    source_csv: str | None = None
    test_csv: str | None = None
    hf_repo: str | None = None           # e.g. sapientinc/maze-30x30-hard-1k
    subsample_size: int | None = None
    aug: bool = False
    seed: int = 0
    overwrite: bool = False


def build_split_arrays(inputs: np.ndarray, labels: np.ndarray, aug: bool) -> dict[str, np.ndarray]:
    n, side = len(inputs), inputs.shape[1]
    tids = range(8) if aug else range(1)
    x = np.stack([np.stack([dihedral(g, t) for t in tids]) for g in inputs]).reshape(-1, side * side)
    y = np.stack([np.stack([dihedral(g, t) for t in tids]) for g in labels]).reshape(-1, side * side)
    per = len(tids)
    return {"inputs": x, "labels": y, "puzzle_identifiers": np.zeros(len(x), dtype=np.int32),
            "puzzle_indices": np.arange(len(x) + 1, dtype=np.int32),
            "group_indices": np.arange(0, n * per + 1, per, dtype=np.int32)}


def build_maze_dataset(cfg: MazeBuildConfig, log=print) -> dict[str, int]:
    from hrm_ray.data.puzzles.format import PuzzleDatasetMetadata, atomic_dataset_dir, write_split
    from hrm_ray.data.puzzles.sudoku import download_hf_csv

    if bool(cfg.source_csv) == bool(cfg.hf_repo):
        raise ValueError("give exactly one source: --source-csv FILE (with --test-csv FILE) or --hf-repo REPO")
    if cfg.hf_repo:
        train_csv, test_csv = download_hf_csv(cfg.hf_repo, "train"), download_hf_csv(cfg.hf_repo, "test")
    else:
        if not cfg.test_csv:
            raise ValueError("--test-csv is required with --source-csv")
        train_csv, test_csv = Path(cfg.source_csv), Path(cfg.test_csv)
    rng = np.random.default_rng(cfg.seed)
    counts = {}
    with atomic_dataset_dir(cfg.output_dir, overwrite=cfg.overwrite) as out:
        for split, path in (("train", train_csv), ("test", test_csv)):
            x, y = read_csv(path)
            if split == "train" and cfg.subsample_size is not None and cfg.subsample_size < len(x):
                pick = np.sort(rng.choice(len(x), cfg.subsample_size, replace=False))
                x, y = x[pick], y[pick]
            arrays = build_split_arrays(x, y, cfg.aug and split == "train")
            meta = PuzzleDatasetMetadata(
                pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=VOCAB_SIZE,
                seq_len=x.shape[1] * x.shape[2], num_puzzle_identifiers=1, total_groups=len(x),
                mean_puzzle_examples=1.0, sets=["all"])
            write_split(out, split, {"all": arrays}, meta)
            counts[split] = len(arrays["inputs"])
            log(f"{split}: {len(x)} mazes, {counts[split]} examples")
        (out / "identifiers.json").write_text('["<blank>"]\n')
    return counts
