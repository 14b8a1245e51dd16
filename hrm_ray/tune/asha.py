"""ASHA whose rungs survive an interrupted sweep.

`Tuner.restore` (Ray 2.x) brings back the trials, the searcher's and the callbacks' state, but re-creates the
scheduler as it was pickled at the start: empty rungs. A resumed trial would then fill an empty rung and a
later one be cut against other values than in an uninterrupted sweep. `PersistentASHA` writes its rungs and
the trials it stopped to `<sweep>/asha_state.jsonl` (one line) after every result it takes, and reads them
back when the restored sweep adds its trials, with the evaluations a trial's run logged before the
interruption that Tune had not passed on yet (its metrics.jsonl): the same cutoffs, the same stop decisions. Not a `.json`: Tune
copies the sweep's top-level .json files to its staging directory on a restore and uploads them back over
the live ones at each experiment checkpoint.
"""
from __future__ import annotations

import json
from typing import Any

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from hrm_ray import storage
from hrm_ray.storage import join
from hrm_ray.train.run_files import RunFiles
from hrm_ray.tune.history import run_curve, run_records

STATE_FILE = "asha_state.jsonl"


def rung_state(brackets: list[Any], stopped: set[str]) -> dict[str, Any]:
    """{"rungs": per bracket [[milestone, {trial_id: signed metric}], ...], "stopped": [trial_id, ...]}."""
    return {"rungs": [[[float(m), dict(recorded)] for m, recorded in b._rungs] for b in brackets],
            "stopped": sorted(stopped)}


def restore_rungs(brackets: list[Any], state: dict[str, Any]) -> None:
    """Put the records of `state` (from `rung_state`) back into brackets of the same shape."""
    saved = state.get("rungs", [])
    if not saved:
        return
    if [[m for m, _ in rungs] for rungs in saved] != [[float(m) for m, _ in b._rungs] for b in brackets]:
        raise ValueError(f"{STATE_FILE}: its rungs do not match this scheduler's (another max_t, grace or factor?)")
    for bracket, rungs in zip(brackets, saved, strict=True):
        for (_, recorded), (_, values) in zip(bracket._rungs, rungs, strict=True):
            recorded.update({trial_id: float(v) for trial_id, v in values.items()})


class PersistentASHA(ASHAScheduler):
    """ASHAScheduler (time_attr, max_t, grace_period, reduction_factor as given) whose state lives in
    `<sweep_path>/asha_state.jsonl`."""

    def __init__(self, sweep_path: str, runs_dir: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sweep_path = sweep_path
        self.runs_dir = runs_dir  # under sweep_path: each trial's Train run, <runs_dir>/<trial_id>/
        self.stopped: set[str] = set()
        self.loaded = False

    def on_trial_add(self, tune_controller, trial) -> None:
        if not self.loaded:  # the first trial a (restored) sweep adds: its rungs first
            self.loaded = True
            self.load()
        super().on_trial_add(tune_controller, trial)
        self.catch_up(trial)

    def catch_up(self, trial) -> None:
        """Take the evaluations of the trial's run that reached no rung yet (logged, then interrupted before
        Tune passed them on; the resumed run goes on after them), deciding as on a result."""
        history = run_curve(run_records(join(self.sweep_path, self.runs_dir, trial.trial_id)), self._metric)
        bracket = self._trial_info[trial.trial_id]
        for step, value in history:
            if trial.trial_id in self.stopped or step >= self._max_t:
                break
            if bracket.on_result(trial, step, self._metric_op * value) == TrialScheduler.STOP:
                self.stopped.add(trial.trial_id)
        if history:
            self.save()

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if trial.trial_id in self.stopped:  # stopped before the interruption, resumed by the restore
            return TrialScheduler.STOP
        action = super().on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.STOP:
            self.stopped.add(trial.trial_id)
        self.save()
        return action

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        super().on_trial_complete(tune_controller, trial, result)
        self.save()

    def save(self) -> None:
        write_state(self.sweep_path, rung_state(self._brackets, self.stopped))

    def load(self) -> None:
        state = read_state(self.sweep_path)
        restore_rungs(self._brackets, state)
        self.stopped = set(state.get("stopped", []))


def write_state(sweep_path: str, state: dict[str, Any]) -> None:
    RunFiles(sweep_path).write_bytes(STATE_FILE, (json.dumps(state) + "\n").encode())


def read_state(sweep_path: str) -> dict[str, Any]:
    """The saved state, or an empty one (a fresh sweep)."""
    uri = join(sweep_path, STATE_FILE)
    return json.loads(storage.read_text(uri)) if storage.exists(uri) else {}
