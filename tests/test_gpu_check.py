"""bench/gpu_check.py at a tiny size on CPU, so that the script a GPU machine runs cannot rot."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def gpu_check():
    spec = importlib.util.spec_from_file_location("hrm_ray_gpu_check", REPO_ROOT / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # its dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.mark.timeout(180)
def test_gpu_check_runs_on_cpu_at_a_tiny_size(gpu_check, capsys):
    rows = gpu_check.main(["--device", "cpu", "--tiny", "--compile_backend", "eager", "--warmup", "1",
                           "--steps", "1"])
    out = capsys.readouterr().out
    results = {check: result for check, result, _ in rows}
    assert not [check for check, result in results.items() if "ok" not in result and result != "skipped"]
    assert results["Mamba2 vs mamba_ssm.Mamba2"] == "skipped"
    assert {"hrm_v1", "hrm_v1_gated", "transformer_baseline", "trm_mlp", "trm_att"} <= set(gpu_check.PUZZLE_ARCHS)
    for family in ("HRM×LM transformer", "HRM×LM mamba2/pytorch-ssd", *gpu_check.PUZZLE_ARCHS):
        assert f"{family}: bf16 training step" in results
    assert out.count("compiled") >= 2 and "FLOPs/step counted" in out and "0 failed" in out
