"""The curriculum stages: configs for every profile carry the curriculum's settings, CLI overrides,
storage and init_from resolution, demo data built by the job, and Stage A -> Stage B in miniature."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from hrm_ray.data.ingest import parse_dataset_spec
from hrm_ray.errors import UserError
from hrm_ray.experiments.demo import gate_halt_summary, reasoning_summary, split_overrides
from hrm_ray.experiments.stage import (
    STORAGE_ENV,
    check_init_from,
    load_stage_config,
    parse_stage_args,
    run_stage,
    stage_main,
)
from hrm_ray.report.build import build_report

CONFIGS = Path(__file__).resolve().parents[1] / "experiments" / "configs"
REASONING = ("sudoku6", "arith", "graph")
DEMO_SOURCES = ("language", "math", "code", *REASONING)
PROFILES = ("demo", "gpu", "cluster")


@pytest.fixture(autouse=True)
def _storage_env(monkeypatch):
    monkeypatch.setenv(STORAGE_ENV, "s3://bucket/hrm-ray")


def stage(name: str, profile: str | None, *overrides: str):
    return load_stage_config(CONFIGS / f"stage_{name}.yaml", profile, list(overrides))


def mix(cfg) -> dict[str, float]:
    specs = parse_dataset_spec(cfg.data.dataset)
    total = sum(w for _, w in specs)
    return {Path(p).name: round(w / total, 4) for p, w in specs}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("profile", PROFILES)
def test_stage_a_opens_the_gate_at_step_8000_with_adamw_8bit_and_patience(profile):
    cfg = stage("a", profile)
    t, o = cfg.train, cfg.optim
    assert 0 < t.hrm_gate_warmup_steps < t.steps and t.gate_ramp_steps == 0
    if profile != "demo":  # the curriculum document's numbers (the demo scales them to its 200 steps)
        assert t.hrm_gate_warmup_steps == 8000 and o.warmup_steps == 4000
    assert o.grad_clip == 5.0
    assert o.optimizer == "adamw_8bit" and o.lr_scheduler == "cosine" and o.lr_min_ratio == 0.05
    assert t.eval_loss_patience == 3 and 0 < t.patience_grace_steps < t.steps
    assert not cfg.model.hrm.deep_supervision and not cfg.model.hrm.use_halting
    assert mix(cfg) == {"language": 1.0}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("profile", PROFILES)
def test_stage_b_turns_on_deep_supervision_halting_and_the_90_5_5_mix(profile):
    cfg = stage("b", profile)
    h, t = cfg.model.hrm, cfg.train
    assert h.deep_supervision and h.ds_weight == 0.1 and h.use_halting and h.halting_weight == 0.005
    assert 0 < t.hrm_gate_warmup_steps < t.steps and t.gate_ramp_steps == 0
    assert cfg.optim.optimizer == "adamw_8bit" and cfg.optim.grad_clip == 5.0
    assert t.eval_loss_patience == 3 and t.hrm_gate_warmup_steps < t.patience_grace_steps < t.steps
    if profile != "demo":
        assert t.hrm_gate_warmup_steps == 1000 and cfg.optim.warmup_steps == 2000
    assert mix(cfg) == {"language": 0.9, "math": 0.05, "code": 0.05}
    stage_a = stage("a", profile)
    assert t.init_from.endswith("/" + stage_a.train.run_name)  # Stage A's run, under the same storage


@pytest.mark.timeout(30)
@pytest.mark.parametrize("profile", PROFILES)
def test_stage_c_goes_deeper_with_a_gate_ramp_and_the_reasoning_mix(profile):
    b, c = stage("b", profile), stage("c", profile)
    assert c.model.hrm.h_cycles > b.model.hrm.h_cycles and c.model.hrm.l_cycles > b.model.hrm.l_cycles
    assert c.train.hrm_gate_warmup_steps == 0 and 0 < c.train.gate_ramp_steps < c.train.steps
    assert c.model.hrm.halting_weight == 0.01 and c.optim.optimizer == "adamw_8bit" and c.optim.grad_clip == 5.0
    assert c.train.eval_loss_patience == 3 and c.train.gate_ramp_steps < c.train.patience_grace_steps
    if profile != "demo":
        assert c.optim.warmup_steps == 3000
    weights = mix(c)
    assert set(weights) == set(DEMO_SOURCES)  # the generated reasoning tasks join the mix
    assert 0.6 <= weights["language"] <= 0.7 and 0.15 <= weights["math"] <= 0.2 and 0.1 <= weights["code"] <= 0.15
    assert all(0 < weights[task] <= 0.1 for task in REASONING)
    assert c.train.init_from.endswith("/" + b.train.run_name)


@pytest.mark.timeout(30)
def test_profiles_size_the_hardware_and_the_cluster_needs_shared_storage(monkeypatch):
    demo, gpu, cluster = (stage("b", p) for p in PROFILES)
    assert not demo.ray.use_gpu and demo.train.mixed_precision == "none" and demo.model.d_model < gpu.model.d_model
    assert gpu.ray.use_gpu and gpu.ray.num_workers == 1 and gpu.train.mixed_precision == "bf16"
    assert cluster.ray.use_gpu and cluster.ray.num_workers > 1 and cluster.ray.max_failures > 0
    assert cluster.ray.storage_path == "s3://bucket/hrm-ray"
    assert cluster.train.init_from == "s3://bucket/hrm-ray/stage-a"
    assert stage("b", "cluster", "--storage_path", "gs://other/x").ray.storage_path == "gs://other/x"
    assert demo.ray.storage_path == "s3://bucket/hrm-ray"  # the env var is read for every profile
    monkeypatch.delenv(STORAGE_ENV)
    assert stage("b", "demo").ray.storage_path == str(Path("~/hrm-ray/runs").expanduser())  # never the cwd
    with pytest.raises(UserError, match="--storage_path"):
        stage("b", "cluster")


@pytest.mark.timeout(30)
def test_every_value_can_be_overridden_from_the_command_line(tmp_path):
    config, profile, overrides = parse_stage_args(
        ["--profile", "demo", "--batch_size", "8", "--hrm_gate_warmup_steps=5", "model.hrm.ds_weight=0.25",
         "--model.bridge.gate_init_bias", "-3", "--dataset", "a:0.5,b:0.5", "--save_dir", str(tmp_path),
         "--init_from", "other-run"], CONFIGS / "stage_b.yaml")
    assert config == str(CONFIGS / "stage_b.yaml") and profile == "demo"
    cfg = load_stage_config(config, profile, overrides)
    assert cfg.train.batch_size == 8 and cfg.train.hrm_gate_warmup_steps == 5
    assert cfg.model.hrm.ds_weight == 0.25 and cfg.model.bridge.gate_init_bias == -3.0
    assert cfg.data.dataset == f"{Path.cwd() / 'a'}:0.5,{Path.cwd() / 'b'}:0.5"  # absolute for the workers
    assert cfg.train.init_from == str(tmp_path / "other-run")  # a run name resolves under the storage
    assert stage("b", "demo", "--init_from", "some/dir").train.init_from == str(Path.cwd() / "some" / "dir")


@pytest.mark.timeout(30)
def test_bad_input_is_one_line_naming_the_flag(capsys, tmp_path):
    default = CONFIGS / "stage_b.yaml"
    assert stage_main(default, ["--profile", "demo", "--batch_sise", "8"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--batch_sise" in err and "batch_size" in err
    assert stage_main(default, ["--profile", "laptop"]) == 2
    assert "laptop" in capsys.readouterr().err
    cfg = stage("b", "demo", "--save_dir", str(tmp_path))
    with pytest.raises(UserError, match="run the previous stage first"):
        check_init_from(cfg)


def test_demo_overrides_split_per_stage():
    a, b = split_overrides(["--a.steps", "30", "--b.steps=40", "--batch_size", "8", "--b.use_gpu", "x.y=1"])
    assert a == ["--steps", "30", "--batch_size", "8", "x.y=1"]
    assert b == ["--steps=40", "--batch_size", "8", "--use_gpu", "x.y=1"]


def test_the_demo_prints_the_last_validation_per_source_and_the_last_task_metric():
    val = [{"step": 100, "loss": 3.0, "math/loss": 2.0, "math/perplexity": 7.4, "math/gate_mean": 0.2},
           {"step": 200, "loss": 2.5, "language/loss": 2.9, "language/perplexity": 18.2, "math/loss": 1.5,
            "math/perplexity": 4.5, "math/gate_mean": 0.3}]
    evals = [{"step": 100, "gsm8k/exact_match": 0.0}, {"step": 200, "gsm8k/exact_match": 0.125}]
    assert reasoning_summary(val, evals) == [
        "val @ step 200 | language loss 2.900 | perplexity 18.2",
        "val @ step 200 | math     loss 1.500 | perplexity 4.5 | gate μ 0.300",
        "val @ step 200 | whole mix loss 2.500",
        "eval @ step 200 | gsm8k/exact_match 12.5%"]


def test_gate_halt_summary_picks_spaced_records():
    records = [{"step": s, "loss": 1.0, "gate_scale": float(s > 4), "gate_mean": 0.1 * (s > 4), "gate_min": 0.0,
                "gate_max": 0.2, "halt_sum_mean": 1.5 - s / 20, "halt_target": 1.0} for s in range(1, 11)]
    lines = gate_halt_summary(records, rows=3)
    assert [line.split("|")[0].split()[1] for line in lines] == ["1", "4", "5", "10"]  # + the opening (4 -> 5)
    assert "gate scale 0.00" in lines[0] and "gate scale 1.00" in lines[-1] and "halt Σ 1.000" in lines[-1]


@pytest.mark.timeout(150)
def test_stage_a_then_stage_b_from_its_best_model_on_demo_data_the_job_builds(ray_session, tmp_path, capsys):
    data = tmp_path / "demo_data"
    common = ["--save_dir", str(tmp_path / "runs"), "--num_workers", "0", "--cpus_per_worker", "1",
              "--d_model", "32", "--n_heads", "2", "--batch_size", "8", "--eval_batch_size", "32",
              "--max_val_samples", "32", "--val_every", "3", "--log_steps", "3", "--warmup_steps", "1"]
    cfg_a, result_a = run_stage(CONFIGS / "stage_a.yaml", "demo",
                                [*common, "--dataset", str(data / "language"), "--steps", "6",
                                 "--hrm_gate_warmup_steps", "6"])
    assert all((data / name / "meta.json").is_file() for name in DEMO_SOURCES)
    metas = [json.loads((data / n / "meta.json").read_text()) for n in DEMO_SOURCES]
    assert len({m["tokenizer_sha256"] for m in metas}) == 1  # one shared tokenizer
    assert [m["mode"] for m in metas] == ["continuation", *["prompt_response"] * 5]
    assert all((data / task / "test.jsonl").is_file() for task in REASONING)  # held out, never trained on
    assert result_a.step == 6 and math.isfinite(result_a.best_val_loss)
    run_a = tmp_path / "runs" / "demo-stage-a"
    assert (run_a / "best-model" / "model.safetensors").is_file()

    # Stage B's run on Stage C's demo mix: language/math/code and the three reasoning tasks
    spec = ",".join(f"{data / n}:{w}" for n, w in mix(stage("c", "demo")).items())
    cfg_b, result_b = run_stage(CONFIGS / "stage_b.yaml", "demo",
                                [*common, "--dataset", spec, "--steps", "6", "--hrm_gate_warmup_steps", "3",
                                 "--tasks", f"gsm8k={data / 'math_dev.jsonl'}", "eval.limit=8"])
    assert cfg_b.train.init_from == str(run_a)
    assert "initialised from " + str(run_a) in capsys.readouterr().out
    records = [json.loads(x) for x in (tmp_path / "runs" / "demo-stage-b" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    assert [r["gate_scale"] for r in train] == [0.0, 1.0]  # closed during warmup, open after
    assert train[0]["gate_mean"] == 0.0 < train[-1]["gate_mean"]
    per_source = {f"{prefix}{n}" for n in DEMO_SOURCES for prefix in ("mix_", "gate_src_")}
    assert all("halt_sum_mean" in r and per_source <= set(r) for r in train)
    assert all(train[0][f"gate_src_{n}"] == 0.0 < train[-1][f"gate_src_{n}"] for n in DEMO_SOURCES)
    val = [r for r in records if r["split"] == "val"][-1]  # per source of the mix, and the demo's math dev file
    assert {"language/loss", "math/perplexity"} <= set(val)  # 32 rows: the 5% sources may have none
    evals = [r for r in records if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [6] and 0.0 <= evals[0]["gsm8k/exact_match"] <= 1.0
    report = build_report(tmp_path / "runs" / "demo-stage-b").read_text()
    assert "](gate_by_source.png)" in report and "gate μ by source at end | language " in report
    assert "](reasoning.png)" in report and "| gsm8k/exact_match | " in report


@pytest.mark.parametrize("name", ["a", "b", "c"])
def test_the_demo_profile_fits_the_2_cpu_head_make_demo_runs_on(name):
    """`ray job submit ... experiments/stage_X.py --profile demo` on a head of 2 CPUs: the plan fits, Ray Data
    included (it was refused: 1 worker x 2 CPUs + 1 for Ray Data)."""
    from hrm_ray.train.resources import Cluster, Node, plan_run, run_need

    fit = plan_run(Cluster((Node(2.0),)), run_need(stage(name, "demo").ray, reads_data=True))
    assert fit.data_cpus >= 0.25
