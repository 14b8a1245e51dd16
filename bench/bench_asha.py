"""ASHA vs running every trial to max_t: the same 8 Stage B configurations, two sweeps side by side in one
run (CPU, Ray Tune over Ray Train trials, the synthetic arithmetic task at a toy size).

Printed: the trial-steps each sweep used (goal: ASHA <= 50% of the full sweep), the wall time of each,
and whether ASHA's best configuration is the one the full runs rank best.

    python bench/bench_asha.py [--steps 180] [--grace 20] [--reduction_factor 3] [--concurrent 2]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import ray
from rich.console import Console
from rich.table import Table

from hrm_ray.experiments.stage import load_stage_config
from hrm_ray.tune.sweep import SweepResult, SweepSpec, run_sweep

STAGE_B = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "stage_b.yaml"


def sweep_spec(args: argparse.Namespace, tmp: str) -> SweepSpec:
    """Stage B's demo sweep at a toy size: its `tune:` space with gate warmups that fit --steps and the
    learning rate added; the scheduler settings as the sweep's flags."""
    cfg = load_stage_config(STAGE_B, "demo", [
        "--dataset", "synthetic", "--init_from=", "--steps", str(args.steps), "--val_every", str(args.val_every),
        "--log_steps", str(args.val_every), "--d_model", "32", "--n_heads", "2", "--max_seq_len", "32",
        "--batch_size", "16", "--eval_batch_size", "128", "--synthetic_train_size", "4000",
        "--synthetic_val_size", "256", "--warmup_steps", "10", "--num_workers", "1", "--cpus_per_worker", "1",
        "--save_dir", str(Path(tmp, "runs")), "--num_samples", str(args.trials),
        "--max_concurrent_trials", str(args.concurrent), "--grace_period", str(args.grace),
        "--reduction_factor", str(args.reduction_factor)])
    cfg.tune.space.update({"train.hrm_gate_warmup_steps": {"choice": [0, args.steps // 6, args.steps // 3]},
                           "optim.learning_rate": {"loguniform": [3.0e-4, 1.0e-2]}})
    spec = SweepSpec.from_config(cfg, "", str(Path(tmp, "sweeps")))
    spec.points = spec.search_space().sample(args.trials, args.seed)  # the same configs for both sweeps
    return spec


def point_index(result: SweepResult, points: list[dict]) -> dict[str, int]:
    """trial_id -> which of the shared points it ran."""
    index = {}
    for row in result.rows:
        for i, point in enumerate(points):
            if all(abs(float(row.params[k]) - float(v)) < 1e-12 for k, v in point.items()):
                index[row.trial_id] = i
    return index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--steps", type=int, default=180, help="max_t")
    parser.add_argument("--val_every", type=int, default=20)
    parser.add_argument("--grace", type=int, default=20)
    parser.add_argument("--reduction_factor", type=int, default=3)
    parser.add_argument("--concurrent", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    console = Console(highlight=False, soft_wrap=True)
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    # Logical CPUs above the cores: a trial ASHA stops is killed, and its placement group is only freed
    # once Ray Train's cleaner notices (through the dashboard); --concurrent still bounds the real load.
    ray.init(address="local", num_cpus=args.trials + args.concurrent, include_dashboard=True,
             dashboard_host="127.0.0.1", log_to_driver=False, configure_logging=False)

    with tempfile.TemporaryDirectory(prefix="bench-asha-") as tmp:
        common = sweep_spec(args, tmp)
        points = common.points
        results, seconds = {}, {}
        for name, scheduler in (("asha", "asha"), ("full", "fifo")):
            start = time.perf_counter()
            results[name] = run_sweep(replace(common, name=name, scheduler=scheduler), log=console.print,
                                      report=False)
            seconds[name] = time.perf_counter() - start

    asha, full = results["asha"], results["full"]
    asha_index, full_index = point_index(asha, points), point_index(full, points)
    full_loss = {full_index[r.trial_id]: r.best_val_loss for r in full.rows}
    table = Table(title=f"{args.trials} configs: ASHA (grace {args.grace}, rf {args.reduction_factor}) vs all to "
                        f"max_t {args.steps}")
    for column in ("config", "lr", "gate_init_bias", "halting_weight", "warmup", "ASHA steps", "ASHA best loss",
                   "full best loss"):
        table.add_column(column)
    for row in sorted(asha.rows, key=lambda r: asha_index[r.trial_id]):
        i = asha_index[row.trial_id]
        p = points[i]
        table.add_row(str(i), f"{p['optim.learning_rate']:.2e}", f"{p['model.bridge.gate_init_bias']:.2f}",
                      f"{p['model.hrm.halting_weight']:.3g}", str(p["train.hrm_gate_warmup_steps"]),
                      str(row.steps), f"{row.best_val_loss:.4f}", f"{full_loss[i]:.4f}")
    console.print(table)

    used_asha, used_full = sum(r.steps for r in asha.rows), sum(r.steps for r in full.rows)
    best_asha, best_full = asha_index[asha.best.trial_id], full_index[full.best.trial_id]
    ranking = sorted(full_loss, key=full_loss.get)
    console.print(f"trial-steps: ASHA {used_asha} vs full {used_full} = {100 * used_asha / used_full:.1f}% "
                  f"(goal <= 50%)")
    console.print(f"wall time: ASHA {seconds['asha']:.1f}s vs full {seconds['full']:.1f}s "
                  f"= {seconds['asha'] / seconds['full']:.2f}x")
    console.print(f"best config: ASHA #{best_asha} (val loss {asha.best.best_val_loss:.4f}), full runs #{best_full} "
                  f"(val loss {full.best.best_val_loss:.4f}); same: {'yes' if best_asha == best_full else 'no'}"
                  f" (ASHA's pick ranks #{ranking.index(best_asha) + 1} of {len(ranking)} in the full runs)")


if __name__ == "__main__":
    main()
