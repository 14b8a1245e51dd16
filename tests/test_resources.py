"""The resource planner (hrm_ray.train.resources): pure Python, no Ray started."""
from __future__ import annotations

import pytest

from hrm_ray.config import Config, RayConfig
from hrm_ray.errors import UserError
from hrm_ray.train.ray_trainer import reads_ray_data
from hrm_ray.train.resources import (
    Cluster,
    Need,
    Node,
    describe,
    plan_run,
    plan_sweep,
    run_need,
)

DRIVER = 0.01  # hrm_ray.tune.sweep.TRIAL_DRIVER_CPUS


def cpus(*per_node: float, autoscaling: bool = False) -> Cluster:
    return Cluster(tuple(Node(c) for c in per_node), autoscaling=autoscaling)


def test_demo_stage_a_on_a_two_cpu_head_fails_at_once_saying_what_is_needed():
    demo = run_need(RayConfig(num_workers=1, cpus_per_worker=2), reads_data=True)
    with pytest.raises(UserError, match=r"^needs 3 CPUs \(1 worker x 2 CPUs \+ 1 for Ray Data\), the cluster has 2: "
                                        r"lower --num_workers/--cpus_per_worker or add nodes$"):
        plan_run(cpus(2), demo)
    with pytest.raises(UserError, match=r"^needs 3 CPUs \(2 workers x 1 CPU \+ 1 for Ray Data\), the cluster has 2"):
        plan_run(cpus(2), Need(workers=2, cpus_per_worker=1, reads_data=True))


def test_ray_data_takes_a_fraction_when_that_is_what_the_workers_leave():
    fit = plan_run(cpus(2), Need(workers=1, cpus_per_worker=1.5, reads_data=True))
    assert (fit.trials, fit.data_cpus, fit.data_limit) == (1, 0.5, 0.5)
    fit = plan_run(cpus(8), Need(workers=2, cpus_per_worker=2, reads_data=True))
    assert (fit.data_cpus, fit.data_limit) == (1.0, 4.0)
    assert describe(cpus(8), Need(2, 2, reads_data=True), fit) == (
        "resources: 2 workers x 2 CPU + Ray Data (tasks of 1 CPU, at most 4 at once) on a cluster of 8 CPUs")
    no_data = plan_run(cpus(2), Need(workers=2, cpus_per_worker=1))  # synthetic data: no Ray Data at all
    assert (no_data.data_cpus, no_data.data_limit) == (0.0, None)
    elastic = run_need(RayConfig(num_workers=2, min_workers=1, cpus_per_worker=1), reads_data=False)
    assert describe(cpus(2), elastic, plan_run(cpus(2), elastic)) == (  # planned for its fewest
        "resources: 1-2 workers x 1 CPU on a cluster of 2 CPUs")


def test_a_two_cpu_sweep_of_four_samples_runs_one_trial_at_a_time_or_fails_at_once():
    trial = run_need(RayConfig(num_workers=1, cpus_per_worker=2), reads_data=True, driver_cpus=DRIVER)
    local = plan_sweep(cpus(3), trial, samples=4)  # a local Ray on 2 cores gets local_cpus(2) = 3 logical CPUs
    assert (local.trials, local.data_cpus) == (1, 0.99)  # the drivers counted: 2 + 0.01 + 0.99
    with pytest.raises(UserError, match=r"^a sweep trial needs 3.01 CPUs \(1 worker x 2 CPUs \+ 0.01 for the trial's "
                                        r"driver \+ 1 for Ray Data\), the cluster has 2"):
        plan_sweep(cpus(2), trial, samples=4)
    small = Need(workers=1, cpus_per_worker=1, driver_cpus=DRIVER, reads_data=True)
    assert plan_sweep(cpus(8), small, samples=4).trials == 3  # 3 x (1 + 0.01 + 1) <= 8 < 4 x 2.01
    assert plan_sweep(cpus(8), small, samples=4, max_concurrent=2).trials == 2
    assert plan_sweep(cpus(64), small, samples=4).trials == 4


def test_gpu_workers_need_a_gpu_each_beside_their_cpus():
    nodes = Cluster((Node(8, 1), Node(8, 1)))
    with pytest.raises(UserError, match=r"^needs 4 GPUs \(4 workers x 1 GPU\), the cluster has 2: lower --num_workers"):
        plan_run(nodes, run_need(RayConfig(num_workers=4, use_gpu=True, cpus_per_worker=4), reads_data=True))
    fit = plan_run(nodes, run_need(RayConfig(num_workers=2, use_gpu=True, cpus_per_worker=4), reads_data=True))
    assert (fit.data_cpus, fit.data_limit) == (1.0, 8.0)
    assert plan_sweep(nodes, Need(1, 4, 1, DRIVER, True), samples=8).trials == 2  # one trial per GPU


def test_a_worker_needs_its_cpus_on_one_node_even_when_the_total_fits():
    with pytest.raises(UserError, match=r"^needs 7 CPUs \(2 workers x 3 CPUs \+ 1 for Ray Data\) with each worker's "
                                        r"3 CPUs on one node, the cluster has 4 nodes of 2 CPUs, 2 CPUs, 2 CPUs, 2 CPUs"):
        plan_run(cpus(2, 2, 2, 2), Need(workers=2, cpus_per_worker=3, reads_data=True))
    fit = plan_run(cpus(2, 2, 2), Need(workers=2, cpus_per_worker=2, reads_data=True))  # Ray Data on the third
    assert fit.data_cpus == 1.0


def test_an_autoscaling_cluster_is_held_to_its_maximum_and_ray_data_left_unlimited():
    grows = cpus(2, 8, 8, autoscaling=True)
    assert plan_run(grows, Need(workers=2, cpus_per_worker=4, reads_data=True)).data_limit is None
    with pytest.raises(UserError, match="the cluster at its autoscaler's maximum has 18"):
        plan_run(grows, Need(workers=5, cpus_per_worker=4, reads_data=True))


def test_which_runs_read_a_ray_dataset():
    cfg = Config()
    cfg.data.dataset = "synthetic"
    assert not reads_ray_data(cfg)
    cfg.data.dataset = "data/prepared/language"
    assert reads_ray_data(cfg)
