"""One logger for every sink: a rich console line with a progress bar, metrics.jsonl, W&B (rank 0)."""
from __future__ import annotations

import json
import math
import os
import sys
import time
import uuid
from typing import Any

from rich.console import Console

from hrm_ray.storage import is_file, read_text
from hrm_ray.train.run_files import RunFiles

METRICS_FILE = "metrics.jsonl"
WANDB_FILE = "wandb.json"  # the W&B project and run id this run logs to, read back when it resumes


def wandb_mode(setting: str) -> str | None:
    """`off` -> None; `online`/`offline` as given; `auto` -> online with an API key, offline without."""
    if setting == "off" or os.environ.get("WANDB_MODE") == "disabled":
        return None
    if setting in ("online", "offline"):
        return setting
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def wandb_identity(project: str, run_id: str, recorded: dict | None, resumed: bool) -> tuple[str, str, str]:
    """(project, run id, resume mode) for `wandb.init`. A resumed run continues the W&B run it recorded (or
    the id given); a new run, even one reusing an old run's name, gets the id given or a fresh one, with
    resume "never": W&B refuses an id that exists instead of appending to that run."""
    recorded = recorded or {}
    if resumed and (run_id or recorded.get("id")):
        return recorded.get("project") or project, run_id or recorded["id"], "allow"
    return project, run_id or uuid.uuid4().hex[:12], "never"


def _recorded_wandb(files: RunFiles | None) -> dict | None:
    if files is None or not is_file(files.path(WANDB_FILE)):
        return None
    try:
        recorded = json.loads(read_text(files.path(WANDB_FILE)))
    except json.JSONDecodeError:
        return None
    return recorded if isinstance(recorded, dict) else None


def format_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def progress_bar(done: int, total: int, width: int = 20) -> str:
    filled = int(width * done / max(1, total))
    return "█" * filled + "░" * (width - filled)


def train_line(step: int, total: int, m: dict[str, float], eta_s: float) -> str:
    parts = [f"step {step}/{total} {progress_bar(step, total)} {100 * step / max(1, total):3.0f}%",
             *([f"epoch {m['epoch']:.2f}"] if "epoch" in m else []),
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


def evaluation_body(metrics: dict[str, Any]) -> str:
    """A val/eval line's fields: plain keys first, then one group per prefix of the `prefix/key` ones (a mixture
    source's validation, a task's metrics): `math: loss 2.1043 perplexity 8.2 ...`."""
    def show(key: str, value: Any) -> str:  # counts such as FLOPs per step in 4 significant digits
        if isinstance(value, float):
            return f"{key} {value:.4g}" if abs(value) >= 1e6 else f"{key} {value:.4f}"
        return f"{key} {value}"

    groups: dict[str, list[str]] = {}
    for key, value in metrics.items():
        if "/" in key:
            prefix, _, rest = key.partition("/")
            groups.setdefault(prefix, []).append(show(rest, value))
    plain = [show(k, v) for k, v in metrics.items() if "/" not in k]
    return " | ".join([*plain, *(f"{prefix}: {' '.join(fields)}" for prefix, fields in groups.items())])


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsLogger:
    """Rank 0 writes; other ranks' loggers are silent so every rank can call the same methods."""

    def __init__(self, files: RunFiles | None, total_steps: int, start_step: int = 0, enabled: bool = True,
                 wandb: str = "off", run_name: str = "", config: dict | None = None,
                 console: Console | None = None, project: str = "hrm-ray", run_id: str = "", resumed: bool = False):
        self.files, self.total_steps, self.enabled = files, total_steps, enabled
        self.console = console or Console(highlight=False, soft_wrap=True)
        self.start_step, self.start_time = start_step, time.perf_counter()
        self.wandb_run = None
        mode = wandb_mode(wandb)
        if enabled and mode:
            import wandb as wandb_lib

            project, run_id, resume = wandb_identity(project, run_id, _recorded_wandb(files), resumed)
            self.wandb_run = wandb_lib.init(project=project, name=run_name or None, mode=mode, config=config,
                                            dir=files.run_dir if files and not files.remote else None,
                                            resume=resume, id=run_id)
            if files is not None:
                files.write_bytes(WANDB_FILE, json.dumps({"project": project, "id": run_id}).encode())

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
            self.console.print(f"[bold]{split} @ step {step}[/bold] | {evaluation_body(metrics)}")
        sys.stdout.flush()

    def event(self, message: str) -> None:
        if self.enabled:
            self.console.print(message)
            sys.stdout.flush()

    def close(self) -> None:
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None
