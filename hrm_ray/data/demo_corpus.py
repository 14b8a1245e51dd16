"""Demo sources every Python install can build: no downloads, no shared data.

- language: English prose from `pydoc_data.topics` and standard-library docstrings (read with `ast`,
  never imported, so no module side effects);
- math: multi-step word problems with a worked chain and a `#### answer` line, GSM8K style;
- code: standard-library functions, prompt = signature + docstring, response = the body.

Each source is written as JSONL (`id`, `text` or `prompt`/`response`) for the data jobs to prepare.
"""
from __future__ import annotations

import ast
import json
import random
import sysconfig
from collections.abc import Iterator
from pathlib import Path

STDLIB_PACKAGES = ("json", "email", "http", "logging", "collections", "importlib", "xml", "urllib",
                   "unittest", "asyncio", "concurrent", "html", "sqlite3", "tomllib", "zoneinfo")
STDLIB_MODULES = ("argparse", "textwrap", "string", "shutil", "pathlib", "difflib", "calendar", "fractions",
                  "statistics", "heapq", "bisect", "functools", "typing", "dataclasses", "inspect", "csv",
                  "datetime", "decimal", "random", "tarfile", "zipfile", "configparser", "pprint", "glob")


def stdlib_sources() -> Iterator[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    for name in STDLIB_MODULES:
        path = root / f"{name}.py"
        if path.is_file():
            yield path
    for name in STDLIB_PACKAGES:
        yield from sorted((root / name).glob("*.py"))


def _parse(path: Path) -> ast.Module | None:
    try:
        return ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError):
        return None


def language_documents(min_chars: int = 200) -> Iterator[dict]:
    """Prose: pydoc topics, then module/class/function docstrings of the standard library."""
    from pydoc_data.topics import topics

    for name in sorted(topics):
        if len(topics[name]) >= min_chars:
            yield {"id": f"pydoc/{name}", "text": topics[name]}
    for path in stdlib_sources():
        tree = _parse(path)
        if tree is None:
            continue
        nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, (ast.ClassDef, ast.FunctionDef)))]
        for node in nodes:
            doc = ast.get_docstring(node)
            if doc and len(doc) >= min_chars:
                name = getattr(node, "name", "<module>")
                yield {"id": f"stdlib/{path.parent.name}/{path.stem}/{name}/{node.lineno if nodes[0] is not node else 0}",
                       "text": doc}


def code_pairs(max_lines: int = 30) -> Iterator[dict]:
    """Prompt: a function's signature and docstring; response: its body without the docstring."""
    for path in stdlib_sources():
        source = path.read_text(encoding="utf-8", errors="replace")
        tree = _parse(path)
        if tree is None:
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef) or not ast.get_docstring(node) or len(node.body) < 2:
                continue
            body_nodes = node.body[1:]
            if node.end_lineno - node.lineno > max_lines:
                continue
            lines = source.splitlines()
            body = "\n".join(lines[body_nodes[0].lineno - 1: node.end_lineno])
            signature = lines[node.lineno - 1].strip()
            prompt = f"Write the body of this Python function.\n{signature}\n\"\"\"{ast.get_docstring(node)}\"\"\""
            yield {"id": f"code/{path.parent.name}/{path.stem}/{node.name}/{node.lineno}",
                   "prompt": prompt, "response": body}


NAMES = ("Ada", "Ben", "Chloe", "Dev", "Emma", "Farid", "Grace", "Hugo", "Iris", "Jun")
ITEMS = ("apples", "books", "coins", "marbles", "stamps", "pencils", "shells", "cards")


def math_problems(count: int, seed: int = 0) -> Iterator[dict]:
    """Word problems of 2-4 steps with a worked chain and the GSM8K answer line."""
    rng = random.Random(seed)
    for index in range(count):
        name, item = rng.choice(NAMES), rng.choice(ITEMS)
        total = rng.randint(2, 30)
        question = [f"{name} has {total} {item}."]
        chain = []
        for _ in range(rng.randint(2, 4)):
            op = rng.choice(("buys", "gives away", "doubles") if total <= 40 else ("gives away",))
            if op == "buys":
                n = rng.randint(1, 20)
                question.append(f"Then {name} buys {n} more.")
                chain.append(f"{total} + {n} = {total + n}")
                total += n
            elif op == "gives away" and total > 1:
                n = rng.randint(1, total - 1)
                question.append(f"Then {name} gives away {n}.")
                chain.append(f"{total} - {n} = {total - n}")
                total -= n
            else:
                question.append(f"Then {name} doubles the {item}.")
                chain.append(f"{total} * 2 = {total * 2}")
                total *= 2
        question.append(f"How many {item} does {name} have now?")
        yield {"id": f"math/{seed}/{index}", "prompt": " ".join(question),
               "response": "\n".join(chain) + f"\n#### {total}"}


def write_jsonl(rows: Iterator[dict], path: Path) -> int:
    """Write rows to `path` through a temporary file; returns the row count."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    count = 0
    with tmp.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    tmp.replace(path)
    return count


def write_demo_sources(dest: str | Path, math_count: int = 4000, seed: int = 0) -> dict[str, Path]:
    """Write language.jsonl, math.jsonl and code.jsonl under `dest`; returns name -> path."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    sources = {
        "language": language_documents(),
        "math": math_problems(math_count, seed),
        "code": code_pairs(),
    }
    paths = {}
    for name, rows in sources.items():
        path = dest / f"{name}.jsonl"
        if write_jsonl(rows, path) == 0:
            raise RuntimeError(f"demo source '{name}' came out empty: {path}")
        paths[name] = path
    return paths
