"""Does the HRM earn its keep in the language model? On each generated reasoning task (6x6 Sudoku as text,
multi-step arithmetic, shortest path), the HRM x LM hybrid (gate closed for a warmup, then ramped open;
ACT halting in the smoke profile) against (a) the same model with the HRM disabled and (b) a plain
encoder-decoder with more encoder layers so that the parameter counts match. Same data, optimiser and seeds;
the same steps (`--budget steps`) or the same training FLOPs (`--budget flops`: the first of --models trains
--steps, every other model as many steps as its FLOPs per step, measured with FlopCounterMode on one training
step, fit in that total). Exact match on the held-out test problems (never trained on) with a 95% Wilson
interval, the gate mu and cycles used; sudoku6 is also scored on problems from symmetry classes held out of
training and on problems that need search (singles do not solve them). `--seeds 0,1,2` reports mean ± sd over
the seeds and each seed. `--ema on` (the default) scores every model's EMA of its weights (train.ema with the
warm-up decay min(0.999, (1 + t) / (10 + t)), which follows the weights on a short run), `--ema off` the final
weights; the same setting for every model. `--json PATH` writes every row.

    nice -n 10 .venv/bin/python bench/bench_lm_reasoning.py [--profile smoke|demo] [--tasks sudoku6 arith graph] [--steps N]
        [--models ...] [--budget steps|flops] [--seeds 0,1,2] [--ema on|off] [--json PATH] [--d_model D]
        [--batch_size B] [--train_size N]
        [--lr LR] [--sudoku_blanks K] [--search_size N] [--hrm KEY=VALUE ...] [--bridge KEY=VALUE ...]

--d_model/--batch_size/--train_size/--lr apply to all three models; --hrm sets model.hrm.* and --bridge
model.bridge.* (the hybrid's HRM and gate; the deeper encoder is matched to the resulting parameter count).

Each model trains in-process (the plain loop, one CPU thread). Sudoku uses `model.aligned_memory` for all
three models: decoder position t reads memory position t (the cell it labels), the HRM's z_H at that cell
for the hybrid. The hybrid is also scored with all cycles (adaptive halting off) to show the two agree.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
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
            f"train.ema={profile.get('ema', 'on') == 'on'}", "train.ema_warmup=true", f"data.dataset={dataset}"]


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


def with_steps(overrides: list[str], steps: int) -> list[str]:
    """The overrides with the step count and the schedules that follow it (later flags win)."""
    return [*overrides, "--steps", str(steps), "--warmup_steps", str(steps // 20), "--hrm_gate_warmup_steps",
            str(steps // 10), "--gate_ramp_steps", str(steps // 10), "--val_every", str(steps),
            "--log_steps", str(max(1, steps // 10))]


def flops_per_step(overrides: list[str]) -> int:
    """Training FLOPs of one step (forward and backward) of a fresh model, counted by FlopCounterMode."""
    from hrm_ray.config import build_config
    from hrm_ray.train.flops import counted
    from hrm_ray.train.lm_task import LanguageModelTask
    from hrm_ray.train.loop import MetricWindow, Throughput, TrainState, setup, train_step
    from hrm_ray.train.metrics import MetricsLogger
    from hrm_ray.train.resolve import resolve_config
    from hrm_ray.train.task import WorkerContext

    task = LanguageModelTask(resolve_config(build_config(None, overrides)))
    ctx = WorkerContext()
    parts = setup(task.cfg, task, ctx, task.cfg.train.steps, None, fresh=True)
    state = TrainState(step=0, best=(-math.inf, math.inf))
    try:
        return counted(lambda: train_step(task.cfg, task, parts, ctx, state, MetricWindow(), Throughput(ctx.device),
                                          MetricsLogger(None, task.cfg.train.steps, enabled=False)))
    finally:
        parts.feed.close()


def train_and_score(name: str, overrides: list[str], save: Path, test_sets: dict[str, list]) -> dict:
    import torch

    from hrm_ray.config import build_config
    from hrm_ray.evals.runner import wilson_interval
    from hrm_ray.infer.task_eval import score_pairs
    from hrm_ray.train.lm_task import LanguageModelTask
    from hrm_ray.train.loop import LocalReporter, run_loop
    from hrm_ray.train.resolve import resolve_config
    from hrm_ray.train.run_files import RunFiles
    from hrm_ray.train.task import WorkerContext, eval_weights

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
    test_pairs = test_sets["easy"]
    with eval_weights(task, task.model):  # the EMA weights with train.ema, else the final ones
        score = score_pairs(task.model, tok, test_pairs, scale, adaptive_halting=True)
        extra = {k: score_pairs(task.model, tok, pairs, scale, adaptive_halting=True).exact
                 for k, pairs in test_sets.items() if k != "easy"}
        all_cycles = (score_pairs(task.model, tok, test_pairs, scale, adaptive_halting=False).exact
                      if task.cfg.model.hrm.enabled else None)
    low, high = wilson_interval(score.hits, score.total, population=None)
    row = {"model": name, "params": sum(p.numel() for p in task.model.parameters()), "steps": result.step,
           "wall_s": wall, "cpu_s": cpu, "exact": score.exact, "low": low, "high": high, "gate": score.gate_mean,
           "cycles": score.cycles_used, "distinct": score.distinct_answers, "n": score.total,
           "val_loss": result.last_val.get("loss", float("nan")), "splits": {"easy": score.exact, **extra}}
    if all_cycles is not None:
        row["exact_all_cycles"] = all_cycles
    return row


def run_task(task: str, profile: dict, root: Path, models: list[str], seeds: list[int], budget: str) -> list[dict]:
    from hrm_ray.data.reasoning_tasks import sudoku_extra_tests
    from hrm_ray.data.task_dataset import build_task_dataset, read_test_pairs

    blanks = profile.get("sudoku_blanks", 20)
    hardness = f"-b{blanks}" if task == "sudoku6" and blanks != 20 else ""
    dataset = root / f"{task}{hardness}-{profile['train']}"
    if not dataset.exists():
        build_task_dataset(task, str(dataset), profile["train"], 200, profile["test"], sudoku_blanks=blanks)
    variants = model_overrides(base_overrides(profile, task, dataset))
    test_sets = {"easy": read_test_pairs(dataset)}
    if task == "sudoku6":
        extra = sudoku_extra_tests(profile["test"], profile.get("search_size", 100), seed=0, blanks=blanks)
        test_sets.update({"heldout_class": extra["test_heldout_class"], "search": extra["test_search"]})
    flops = {name: flops_per_step(variants[name]) for name in models}
    ref = models[0]
    steps = {name: profile["steps"] if budget == "steps" else max(1, round(profile["steps"] * flops[ref] / f))
             for name, f in flops.items()}
    rows = []
    for seed in seeds:
        for name in models:
            overrides = [*with_steps(variants[name], steps[name]), "--seed", str(seed)]
            row = train_and_score(f"{task}-{name}-s{seed}", overrides, root / "runs", test_sets)
            row.update(task=task, seed=seed, name=name, flops_per_step=flops[name],
                       test_sizes={k: len(v) for k, v in test_sets.items()})
            print(format_row(task, row), flush=True)
            rows.append(row)
    return rows


def summary(rows: list[dict]) -> list[str]:
    """Mean ± sd over seeds of each split's exact match, per task and model, with the compute each used."""
    lines = ["| task | model | seeds | steps | GFLOP/step | TFLOP total | " + " | ".join(
        f"{k} exact % (n)" for k in ("easy", "heldout_class", "search")) + " |", "|---|---|---|---|---|---|---|---|---|"]
    keys = sorted({(r["task"], r["name"]) for r in rows}, key=lambda k: [(r["task"], r["name"]) for r in rows].index(k))
    for task, name in keys:
        group = [r for r in rows if (r["task"], r["name"]) == (task, name)]
        cells = []
        for k in ("easy", "heldout_class", "search"):
            values = [r["splits"][k] for r in group if k in r["splits"]]
            if not values:
                cells.append("-")
                continue
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            each = ", ".join(f"{100 * v:.1f}" for v in values)
            cells.append(f"{100 * statistics.mean(values):.1f} ± {100 * sd:.1f} [{each}] ({group[0]['test_sizes'][k]})")
        f = group[0]["flops_per_step"]
        lines.append(f"| {task} | {name} | {','.join(str(r['seed']) for r in group)} | {group[0]['steps']} | "
                     f"{f / 1e9:.2f} | {f * group[0]['steps'] / 1e12:.2f} | " + " | ".join(cells) + " |")
    return lines


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
    parser.add_argument("--seeds", default="0", help="comma-separated model seeds (init, batch order); same data")
    parser.add_argument("--budget", choices=("steps", "flops"), default="steps",
                        help="flops: every model gets the first model's training FLOPs (its --steps)")
    parser.add_argument("--ema", choices=("on", "off"), default="on",
                        help="score every model's EMA of its weights (warm-up decay), or its final weights")
    parser.add_argument("--json", default="", help="also write every row to this JSON file")
    parser.add_argument("--search_size", type=int, default=0, help="sudoku6 needs-search test problems (100)")
    # The HRM's own settings (the hybrid only; the deeper encoder is matched to the resulting parameters)
    parser.add_argument("--hrm", nargs="+", default=[], metavar="KEY=VALUE",
                        help="model.hrm.KEY=VALUE, e.g. h_cycles=4 l_layers=2 one_step_grad=false use_halting=false")
    parser.add_argument("--bridge", nargs="+", default=[], metavar="KEY=VALUE",
                        help="model.bridge.KEY=VALUE, e.g. gate_init_bias=4 (a gate that starts open)")
    args = parser.parse_args(argv)
    chosen = {"steps": args.steps, "d_model": args.d_model, "batch": args.batch_size, "train": args.train_size,
              "lr": args.lr, "sudoku_blanks": args.sudoku_blanks, "search_size": args.search_size, "ema": args.ema}
    profile = {**PROFILES[args.profile], **{k: v for k, v in chosen.items() if isinstance(v, str) or v > 0},
               "hrm": {**PROFILES[args.profile].get("hrm", {}), **key_values(args.hrm)},
               "bridge": key_values(args.bridge)}
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench_lm_reasoning_") as tmp:
        root = Path(args.workdir or tmp)
        print(f"profile {args.profile}: {profile}", flush=True)
        print(HEADER, flush=True)
        seeds = [int(x) for x in args.seeds.split(",")]
        rows = [row for task in args.tasks for row in run_task(task, profile, root, args.models, seeds, args.budget)]
    print("\n" + HEADER)
    for row in rows:
        print(format_row(row["task"], row))
    print(f"\nbudget {args.budget} (reference {args.models[0]}: {profile['steps']} steps), seeds {args.seeds}, "
          f"EMA {args.ema}{' (warm-up decay)' if args.ema == 'on' else ''} for every model; mean ± sd [each seed] "
          "(test problems)")
    print("\n".join(summary(rows)))
    if args.json:
        Path(args.json).write_text(json.dumps({"argv": argv if argv is not None else sys.argv[1:], "profile": profile,
                                               "rows": rows}, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
