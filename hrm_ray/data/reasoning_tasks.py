"""Generated reasoning tasks as text (prompt, response): 6x6 Sudoku, multi-step arithmetic, shortest paths.

Each problem's split (train / val / test) is fixed by a hash of its prompt (`synthetic.split_of`), so a
test problem is never a training one however many are drawn; problems are drawn from one seeded stream
until every split has its count, so the same seed and counts give the same pairs.

- sudoku6: prompt = the grid with `.` for blanks, rows joined by `/`; response = the solved grid in the
  same layout, so response character t labels prompt character t (`model.aligned_memory`). Its difficulty is
  the number of blanks (`sudoku_blanks`, default 20 of 36; more blanks, longer chains of deduction). Grids
  come from every symmetry class except the held-out ones (`sudoku_generate.heldout_class`), and a
  problem's split is fixed by a hash of its solution grid up to digit relabelling, so no test grid is a
  training grid; `sudoku_extra_tests` draws the held-out-class and needs-search test problems.
- arith: 3-4 operands of 3 digits joined by + and -, answer only (the intermediate sums are carried).
- graph: a random connected graph given as an edge list, the answer is the shortest-path length.
"""
from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterator

import numpy as np

from hrm_ray.data.puzzles.demo import small_sudoku_examples
from hrm_ray.data.puzzles.sudoku_generate import draw, heldout_class, relabel_key
from hrm_ray.data.synthetic import SPLITS, split_of
from hrm_ray.errors import UserError

SUDOKU_BOX = (2, 3)
SUDOKU_BLANKS = 20
TASKS = ("sudoku6", "arith", "graph")
Pair = tuple[str, str]


def grid_text(cells: np.ndarray, side: int = 6) -> str:
    """Flat grid (0 = blank) -> rows of digits (`.` for a blank) joined by `/`."""
    chars = ["." if v == 0 else str(int(v)) for v in cells]
    return "/".join("".join(chars[r * side:(r + 1) * side]) for r in range(side))


def sudoku_stream(rng: random.Random, blanks: int = SUDOKU_BLANKS, chunk: int = 256) -> Iterator[Pair]:
    """6x6 Sudoku with a unique solution, from the puzzle family's generator."""
    gen = np.random.default_rng(rng.getrandbits(63))
    while True:
        puzzles, solutions = small_sudoku_examples(chunk, blanks, SUDOKU_BOX, gen)
        for puzzle, solution in zip(puzzles, solutions, strict=True):
            if not heldout_class(solution, SUDOKU_BOX):
                yield grid_text(puzzle), grid_text(solution)


def sudoku_split_key(response: str) -> str:
    """What fixes a sudoku6 problem's split: its solution grid up to digit relabelling."""
    return relabel_key(np.frombuffer(response.replace("/", "").encode(), dtype=np.uint8) - ord("0")).hex()


def sudoku_extra_tests(count: int, search_count: int, seed: int = 0, blanks: int = SUDOKU_BLANKS
                       ) -> dict[str, list[Pair]]:
    """`count` sudoku6 problems from held-out symmetry classes (`blanks` blanks) and `search_count` that need
    search (holes dug while the solution stays unique), both from held-out classes, so neither shares a grid
    (or a symmetry image of one) with the training problems."""
    rng = np.random.default_rng([seed, 77])
    held = draw(count, SUDOKU_BOX, blanks, rng, heldout=True)
    search = draw(search_count, SUDOKU_BOX, None, rng, difficulty="search", heldout=True)
    return {"test_heldout_class": [(grid_text(p), grid_text(s)) for p, s in zip(held.puzzles, held.solutions,
                                                                               strict=True)],
            "test_search": [(grid_text(p), grid_text(s)) for p, s in zip(search.puzzles, search.solutions,
                                                                         strict=True)]}


def arith_stream(rng: random.Random) -> Iterator[Pair]:
    """'What is 512 + 347 - 129?' -> '730'."""
    while True:
        numbers = [rng.randint(100, 999) for _ in range(rng.choice((3, 4)))]
        ops = [rng.choice("+-") for _ in numbers[1:]]
        total = numbers[0]
        for op, n in zip(ops, numbers[1:], strict=True):
            total = total + n if op == "+" else total - n
        text = " ".join([str(numbers[0])] + [f"{op} {n}" for op, n in zip(ops, numbers[1:], strict=True)])
        yield f"What is {text}?", str(total)


def shortest_path(nodes: int, edges: list[tuple[int, int]], source: int, target: int) -> int:
    """Breadth-first distance in an undirected graph (-1 if unreachable)."""
    adjacent: list[list[int]] = [[] for _ in range(nodes)]
    for a, b in edges:
        adjacent[a].append(b)
        adjacent[b].append(a)
    dist = {source: 0}
    queue = deque([source])
    while queue:
        node = queue.popleft()
        for nxt in adjacent[node]:
            if nxt not in dist:
                dist[nxt] = dist[node] + 1
                queue.append(nxt)
    return dist.get(target, -1)


def graph_stream(rng: random.Random, nodes: int = 8, extra_edges: int = 3) -> Iterator[Pair]:
    """A random spanning tree plus a few extra edges over `nodes` nodes; the question is the length of
    the shortest path between two distinct nodes: 'Edges: 0-3 1-4 ... Shortest path 0 to 5?' -> '3'."""
    while True:
        order = list(range(nodes))
        rng.shuffle(order)
        edges = {tuple(sorted((order[i], order[rng.randrange(i)]))) for i in range(1, nodes)}
        while len(edges) < nodes - 1 + extra_edges:
            a, b = rng.sample(range(nodes), 2)
            edges.add((min(a, b), max(a, b)))
        listed = sorted(edges, key=lambda _: rng.random())
        source, target = rng.sample(range(nodes), 2)
        length = shortest_path(nodes, listed, source, target)
        text = " ".join(f"{a}-{b}" for a, b in listed)
        yield f"Edges: {text}. Shortest path {source} to {target}?", str(length)


STREAMS: dict[str, Callable[[random.Random], Iterator[Pair]]] = {
    "sudoku6": sudoku_stream, "arith": arith_stream, "graph": graph_stream}


def task_pairs(task: str, counts: dict[str, int], seed: int = 0, val_ratio: float = 0.05,
               test_ratio: float = 0.1, sudoku_blanks: int = SUDOKU_BLANKS) -> dict[str, list[Pair]]:
    """`counts[split]` distinct problems of each split of `task`, split by a hash of the prompt."""
    if task not in STREAMS:
        raise UserError(f"--task must be one of {', '.join(TASKS)}, got {task!r}")
    if not 0 < sudoku_blanks <= 28:  # a 6x6 Sudoku with one solution has at least 8 givens
        raise UserError(f"--sudoku_blanks must be in 1..28, got {sudoku_blanks}")
    bad = [s for s in counts if s not in SPLITS]
    if bad:
        raise UserError(f"reasoning task splits: unknown {bad} (use {', '.join(SPLITS)})")
    out: dict[str, list[Pair]] = {s: [] for s in counts}
    seen: set[str] = set()
    need = sum(counts.values())
    rng = random.Random(f"{task}-{seed}")
    stream = sudoku_stream(rng, sudoku_blanks) if task == "sudoku6" else STREAMS[task](rng)
    for drawn, (prompt, response) in enumerate(stream):
        if sum(len(v) for v in out.values()) == need:
            break
        if drawn > 100 * need + 10_000:
            raise UserError(f"{task}: could not draw {counts} distinct problems (raise the split ratios)")
        split = split_of(sudoku_split_key(response) if task == "sudoku6" else prompt, val_ratio, test_ratio, seed)
        if prompt not in seen and split in out and len(out[split]) < counts[split]:
            seen.add(prompt)
            out[split].append((prompt, response))
    return out
