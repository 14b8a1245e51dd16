"""Does the HRM earn its keep in the language model? On each generated reasoning task (6x6 Sudoku as text,
multi-step arithmetic, shortest path), the HRM x LM hybrid (gate closed for a warmup, then ramped open;
ACT halting in the smoke profile) against (a) the same model with the HRM disabled and (b) a plain
encoder-decoder with more encoder layers so that the parameter counts match. Same data, steps, optimiser and seed; exact match on
the held-out test problems (never trained on) with a 95% Wilson interval, the gate mu and cycles used.

    nice -n 10 .venv/bin/python bench/bench_lm_reasoning.py [--profile smoke|demo] [--tasks sudoku6 arith graph] [--steps N]
        [--models ...] [--d_model D] [--batch_size B] [--train_size N] [--lr LR] [--sudoku_blanks K]
        [--seed S] [--hrm KEY=VALUE ...] [--bridge KEY=VALUE ...]

--d_model/--batch_size/--train_size/--lr apply to all three models; --hrm sets model.hrm.* and --bridge
model.bridge.* (the hybrid's HRM and gate; the deeper encoder is matched to the resulting parameter count).

Each model trains in-process (the plain loop, one CPU thread). Sudoku uses `model.aligned_memory` for all
three models: decoder position t reads memory position t (the cell it labels), the HRM's z_H at that cell
for the hybrid. The hybrid is also scored with all cycles (adaptive halting off) to show the two agree.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("WANDB_MODE", "disabled")

# Model size, steps, data and the hybrid's HRM of each profile. smoke: a quick check with adaptive halting on.
# demo: the settings measured to work on Sudoku (README), each model within 15 CPU minutes.
PROFILES = {
    "smoke": {"d_model": 64, "steps": 300, "batch": 32, "train": 4000, "test": 300},
    "demo": {"d_model": 64, "steps": 2000, "batch": 32, "train": 16000, "test": 300, "lr": 0.002,
             "hrm": {"h_cycles": 6, "one_step_grad": False, "use_halting": False}},
}
TASKS = ("sudoku6", "arith", "graph")
MODELS = ("hybrid", "no_hrm", "deeper_encoder")


HRM_DEFAULTS = {"h_cycles": 3, "l_cycles": 2, "h_layers": 1, "l_layers": 1, "use_halting": True}


def base_overrides(profile: dict, task: str, dataset: Path) -> list[str]:
    steps = profile["steps"]
    hrm = {**HRM_DEFAULTS, **profile.get("hrm", {})}  # the HRM's settings (they only change the hybrid)
    return ["--d_model", str(profile["d_model"]), "--n_heads", "4", "--encoder_layers", "2", "--decoder_layers", "2",
            *(f"model.hrm.{k}={v}" for k, v in hrm.items()),
            *(f"model.bridge.{k}={v}" for k, v in profile.get("bridge", {}).items()),
            "model.hrm.halting_weight=0.005", f"model.aligned_memory={task == 'sudoku6'}",
            "--steps", str(steps), "--batch_size", str(profile["batch"]), "--learning_rate", str(profile.get("lr", 0.001)),
            "--warmup_steps", str(steps // 20), "--weight_decay", "0.1", "--seed", str(profile.get("seed", 0)),
            "--hrm_gate_warmup_steps", str(steps // 10), "--gate_ramp_steps", str(steps // 10),
            "--val_every", str(steps), "--log_steps", str(max(1, steps // 10)), "--wandb", "off",
            "--max_seq_len", "128", "data.max_val_samples=200", "ray.num_workers=0",
            f"data.dataset={dataset}"]


def params_of(overrides: list[str]) -> int:
    from hrm_ray.config import build_config
    from hrm_ray.train.lm_task import LanguageModelTask
    from hrm_ray.train.resolve import resolve_config

    task = LanguageModelTask(resolve_config(build_config(None, overrides)))
    return sum(p.numel() for p in task.build_model().parameters())


def model_overrides(base: list[str]) -> dict[str, list[str]]:
    """The hybrid, the same model without the HRM, and the encoder deepened to the hybrid's parameters."""
    target = params_of(base)
    no_hrm = [*base, "model.hrm.enabled=false"]
    extra = min(range(0, 9), key=lambda k: abs(params_of([*no_hrm, "--encoder_layers", str(2 + k)]) - target))
    return {"hybrid": base, "no_hrm": no_hrm, "deeper_encoder": [*no_hrm, "--encoder_layers", str(2 + extra)]}


def train_and_score(name: str, overrides: list[str], save: Path, test_pairs: list) -> dict:
    import torch

    from hrm_ray.config import build_config
    from hrm_ray.infer.task_eval import score_pairs
    from hrm_ray.train.lm_task import LanguageModelTask
    from hrm_ray.train.loop import LocalReporter, run_loop
    from hrm_ray.train.puzzle_task import wilson_interval
    from hrm_ray.train.resolve import resolve_config
    from hrm_ray.train.run_files import RunFiles
    from hrm_ray.train.task import WorkerContext

    class Keep(LanguageModelTask):
        def build_model(self):
            self.model = super().build_model()
            return self.model

    task = Keep(resolve_config(build_config(None, [*overrides, "--run_name", name, "--save_dir", str(save)])))
    torch.manual_seed(0)
    start, cpu_start = time.perf_counter(), time.process_time()
    run_dir = save / name
    result = run_loop(task.cfg, task, WorkerContext(), LocalReporter(run_dir, 1), RunFiles(str(run_dir)))
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(task.data.tokenizer_json)
    scale = task.gate_scale(result.step)
    score = score_pairs(task.model, tok, test_pairs, scale, adaptive_halting=True)
    low, high = wilson_interval(score.hits, score.total, population=None)
    row = {"model": name, "params": sum(p.numel() for p in task.model.parameters()), "steps": result.step,
           "wall_s": wall, "cpu_s": cpu, "exact": score.exact, "low": low, "high": high, "gate": score.gate_mean,
           "cycles": score.cycles_used, "distinct": score.distinct_answers, "n": score.total,
           "val_loss": result.last_val.get("loss", float("nan"))}
    if task.cfg.model.hrm.enabled:
        row["exact_all_cycles"] = score_pairs(task.model, tok, test_pairs, scale, adaptive_halting=False).exact
    return row


def run_task(task: str, profile: dict, root: Path, models: list[str]) -> list[dict]:
    from hrm_ray.data.task_dataset import build_task_dataset, read_test_pairs

    blanks = profile.get("sudoku_blanks", 20)
    hardness = f"-b{blanks}" if task == "sudoku6" and blanks != 20 else ""
    dataset = root / f"{task}{hardness}-{profile['train']}"
    if not dataset.exists():
        build_task_dataset(task, str(dataset), profile["train"], 200, profile["test"], sudoku_blanks=blanks)
    variants = model_overrides(base_overrides(profile, task, dataset))
    test_pairs = read_test_pairs(dataset)
    rows = []
    for name in models:
        row = train_and_score(f"{task}-{name}", variants[name], root / "runs", test_pairs)
        print(format_row(task, row), flush=True)
        rows.append({**row, "task": task})
    return rows


def format_row(task: str, r: dict) -> str:
    all_cycles = f"{100 * r['exact_all_cycles']:.1f}" if "exact_all_cycles" in r else "-"
    return (f"| {task} | {r['model']} | {r['params']:,} | {r['steps']} | {100 * r['exact']:.1f} "
            f"[{100 * r['low']:.1f}, {100 * r['high']:.1f}] | {all_cycles} | {r['gate']:.3f} | {r['cycles']:.2f} "
            f"| {r['distinct']}/{r['n']} | {r['val_loss']:.3f} | {r['wall_s']:.0f} | {r['cpu_s'] / 60:.1f} |")


HEADER = ("| task | model | params | steps | exact % [95% CI] | exact % all cycles | gate mu | cycles used "
          "| distinct answers | val loss | train s | train CPU min |\n|---|---|---|---|---|---|---|---|---|---|---|---|")


def key_values(items: list[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in items)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="demo")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--workdir", default="", help="datasets and runs (default: a temporary directory)")
    parser.add_argument("--steps", type=int, default=0, help="training steps (default: the profile's)")
    # Settings that apply to all three models alike (default: the profile's / 1e-3)
    parser.add_argument("--d_model", type=int, default=0)
    parser.add_argument("--batch_size", type=int, default=0)
    parser.add_argument("--train_size", type=int, default=0, help="training problems")
    parser.add_argument("--lr", type=float, default=0.0, help="learning rate (default: the profile's, else 1e-3)")
    parser.add_argument("--sudoku_blanks", type=int, default=0, help="sudoku6 blanks of 36 (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="the models' seed (init, batch order); same data")
    # The HRM's own settings (the hybrid only; the deeper encoder is matched to the resulting parameters)
    parser.add_argument("--hrm", nargs="+", default=[], metavar="KEY=VALUE",
                        help="model.hrm.KEY=VALUE, e.g. h_cycles=4 l_layers=2 one_step_grad=false use_halting=false")
    parser.add_argument("--bridge", nargs="+", default=[], metavar="KEY=VALUE",
                        help="model.bridge.KEY=VALUE, e.g. gate_init_bias=4 (a gate that starts open)")
    args = parser.parse_args(argv)
    chosen = {"steps": args.steps, "d_model": args.d_model, "batch": args.batch_size, "train": args.train_size,
              "lr": args.lr, "sudoku_blanks": args.sudoku_blanks, "seed": args.seed}
    profile = {**PROFILES[args.profile], **{k: v for k, v in chosen.items() if v > 0},
               "hrm": {**PROFILES[args.profile].get("hrm", {}), **key_values(args.hrm)},
               "bridge": key_values(args.bridge)}
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench_lm_reasoning_") as tmp:
        root = Path(args.workdir or tmp)
        print(f"profile {args.profile}: {profile}", flush=True)
        print(HEADER, flush=True)
        rows = [row for task in args.tasks for row in run_task(task, profile, root, args.models)]
    print("\n" + HEADER)
    for row in rows:
        print(format_row(row["task"], row))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
