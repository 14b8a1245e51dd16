"""Everything fits the machine it runs on: a dry run takes a small batch unless told otherwise, and a run whose
memory estimate (parameters, gradients, optimizer state, activations measured by a probe) exceeds the node's
memory fails at once with one line (the node's memory injected through $HRM_RAY_NODE_MEMORY_GB)."""
from __future__ import annotations

import os
import signal
import sys

import pytest
import ray.cloudpickle
from ray.exceptions import OutOfMemoryError

import tests.test_train_loop as toys
from hrm_ray.config import build_config
from hrm_ray.errors import UserError
from hrm_ray.train.dry_run import DRY_RUN_BATCH
from hrm_ray.train.memory import NODE_MEMORY_ENV, estimate_memory
from hrm_ray.train.ray_failures import memory_death
from hrm_ray.train.ray_trainer import build_task, train
from hrm_ray.train.resolve import resolve_config
from hrm_ray.train.task_registry import task_class

TINY_LM = ["--d_model", "32", "--n_heads", "2", "--encoder_layers", "1", "--decoder_layers", "1", "--wandb", "off",
           "--max_seq_len", "32", "--num_workers", "0", "--steps", "2", "--val_every", "2"]


def dry_batch(cfg):
    return task_class(cfg).dry_batch(cfg)


def test_a_dry_run_takes_a_small_batch_unless_one_is_given():
    assert dry_batch(build_config(None, ["arch=trm_mlp"])) == DRY_RUN_BATCH == 8  # not the paper's 768
    assert dry_batch(build_config(None, ["arch=hrm_v1"])) == 8
    assert dry_batch(build_config(None, ["arch=hrm_v1", "--batch_size", "16"])) == 16
    assert dry_batch(build_config(None, ["arch=hrm_v1", "global_batch_size=4"])) == 4
    assert dry_batch(build_config(None, [])) == 8  # the language model too


def test_the_estimate_measures_activations_per_example_and_scales_them():
    task = build_task(resolve_config(build_config(None, TINY_LM)))
    model = task.build_model()
    small, large = estimate_memory(task.cfg, model, batch=2), estimate_memory(task.cfg, model, batch=64)
    params = sum(p.numel() for p in model.parameters())
    assert small.parameters == params * 4 and small.optimizer == params * 8  # fp32 AdamW: two moments
    assert small.activations > 0 and large.activations == pytest.approx(small.activations * 32)


def test_a_run_that_cannot_fit_fails_at_once_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv(NODE_MEMORY_ENV, "0.001")  # a node of 1 MiB
    cfg = build_config(None, [*TINY_LM, "--batch_size", "64", "--save_dir", str(tmp_path), "--run_name", "big"])
    with pytest.raises(UserError) as caught:
        train(cfg)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("the run does not fit in memory: it needs about")
    assert "a worker's node has 0.00 GiB" in message and "--grad_accum_steps" in message
    assert not (tmp_path / "big").exists()  # nothing written


class KilledTask(toys.ToyTask):
    """The worker's process is killed at step 2 with SIGKILL, as the OS's OOM killer does."""

    def forward(self, model, batch, step):
        if step == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().forward(model, batch, step)


@pytest.mark.timeout(180)
def test_a_worker_killed_like_the_oom_killer_does_is_one_line_naming_it(ray_session, tmp_path):
    ray.cloudpickle.register_pickle_by_value(toys)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cfg = toys.toy_cfg(tmp_path, "--steps", "6", "--num_workers", "1", "--cpus_per_worker", "1", "--run_name", "k")
    with pytest.raises(UserError) as caught:
        train(cfg, KilledTask(cfg))
    message = str(caught.value)
    assert "\n" not in message and message.startswith("Ray Train worker rank 0 (pid "), message
    assert "most likely killed by the OS for memory" in message and "--batch_size" in message


def test_a_kill_by_rays_memory_monitor_names_the_worker_and_its_memory():
    text = ("Task was killed due to the node running low on memory.\nMemory on the node (IP: 10.0.0.5, ID: ab12) "
            "where the task (actor ID: cd34, name=RayTrainWorker.__init__, pid=4242, memory used=21.3GB) was "
            "running was 23.1GB / 24.0GB (0.96), which exceeds the memory usage threshold of 0.95.")
    line = memory_death(1, OutOfMemoryError(text), "about 3.00 GiB per worker")
    assert line.startswith("Ray Train worker rank 1 (pid 4242 on 10.0.0.5) was killed by Ray's memory monitor: "
                           "it used 21.3GB, the node 23.1GB / 24.0GB in use; the run's estimate: about 3.00 GiB")
    assert memory_death(0, RuntimeError("CUDA error: device-side assert")) is None
