"""One logger for every sink: a rich console line with a progress bar, metrics.jsonl, W&B (rank 0)."""
from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any

from rich.console import Console

from hrm_ray.train.run_files import RunFiles

METRICS_FILE = "metrics.jsonl"


def wandb_mode(setting: str) -> str | None:
    """`off` -> None; `online`/`offline` as given; `auto` -> online with an API key, offline without."""
    if setting == "off" or os.environ.get("WANDB_MODE") == "disabled":
        return None
    if setting in ("online", "offline"):
        return setting
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def format_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def progress_bar(done: int, total: int, width: int = 20) -> str:
    filled = int(width * done / max(1, total))
    return "█" * filled + "░" * (width - filled)


def train_line(step: int, total: int, m: dict[str, float], eta_s: float) -> str:
    parts = [f"step {step}/{total} {progress_bar(step, total)} {100 * step / max(1, total):3.0f}%",
             f"loss {m['loss']:.4f}", f"lr {m['lr']:.2e}", f"gnorm {m.get('grad_norm', float('nan')):.2f}",
             f"tok/s {m.get('tokens_per_s', 0.0):,.0f}"]
    if "gate_mean" in m:
        parts.append(f"gate μ {m['gate_mean']:.3f} [{m.get('gate_min', 0):.3f},{m.get('gate_max', 0):.3f}]"
                     f" ×{m.get('gate_scale', 1.0):.2f}")
    if "halt_sum_mean" in m:
        parts.append(f"halt Σ {m['halt_sum_mean']:.2f}/{m.get('halt_target', 1.0):.2f}")
    if m.get("nonfinite_steps"):
        parts.append(f"[red]non-finite {int(m['nonfinite_steps'])}[/red]")
    parts.append(f"ETA {format_duration(eta_s)}")
    return " | ".join(parts)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsLogger:
    """Rank 0 writes; other ranks' loggers are silent so every rank can call the same methods."""

    def __init__(self, files: RunFiles | None, total_steps: int, start_step: int = 0, enabled: bool = True,
                 wandb: str = "off", run_name: str = "", config: dict | None = None,
                 console: Console | None = None):
        self.files, self.total_steps, self.enabled = files, total_steps, enabled
        self.console = console or Console(highlight=False, soft_wrap=True)
        self.start_step, self.start_time = start_step, time.perf_counter()
        self.wandb_run = None
        mode = wandb_mode(wandb)
        if enabled and mode:
            import wandb as wandb_lib

            self.wandb_run = wandb_lib.init(project="hrm-ray", name=run_name or None, mode=mode, config=config,
                                            dir=files.run_dir if files and not files.remote else None,
                                            resume="allow", id=run_name or None)

    def log(self, step: int, split: str, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": step, "split": split, "time": round(time.time(), 3),
                  **{k: _clean(v) for k, v in metrics.items()}}
        if self.files is not None:
            self.files.append_line(METRICS_FILE, json.dumps(record))
        if self.wandb_run is not None:
            self.wandb_run.log({f"{split}/{k}": v for k, v in metrics.items()}, step=step)
        if split == "train":
            done = max(1, step - self.start_step)
            elapsed = time.perf_counter() - self.start_time
            self.console.print(train_line(step, self.total_steps, metrics,
                                          elapsed / done * (self.total_steps - step)))
        else:
            body = " | ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
            self.console.print(f"[bold]{split} @ step {step}[/bold] | {body}")
        sys.stdout.flush()

    def event(self, message: str) -> None:
        if self.enabled:
            self.console.print(message)
            sys.stdout.flush()

    def close(self) -> None:
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None
