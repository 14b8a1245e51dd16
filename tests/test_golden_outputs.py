"""Golden outputs: every model family on CPU reproduces what tests/golden/*.pt recorded, bit for bit.

tests/golden/make_golden.py documents how the goldens were made (from a fixed git revision) and
holds the computation: each case's model is rebuilt from the config recorded in the file, with the
recorded seed and inputs, and every recorded tensor (outputs, losses, diagnostics, the gradient of
every parameter) is compared with the recomputed one; parameter and state-dict names must match
exactly. A refactor that renames parameters must update the goldens deliberately. This test never
regenerates them.

On the CPU capability the goldens were recorded with (torch.backends.cpu.get_cpu_capability(), stored in
each file) the comparison is bit-exact. Another x86 microarchitecture (e.g. with AMX) makes MKL and oneDNN
pick other kernels, which sum in another order: only there may a tensor differ in its last bits, within
ROUNDING of its largest value, and it passes with a warning that names the CPU (measured: at most 1.5e-5
on an AMX machine, against goldens made without); a change to a model moves values by far more and fails.
"""
from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
GOLDENS = sorted(p.stem for p in GOLDEN_DIR.glob("*.pt"))   # one file per family of cases (make_golden.py)
RECORD_KEYS = ("param_names", "state_dict_keys", "tensors")
ROUNDING = 1e-4  # of a tensor's largest |value|: kernel-order differences between CPUs stay far below


@pytest.fixture(scope="module")
def maker():
    spec = importlib.util.spec_from_file_location("hrm_ray_make_golden", GOLDEN_DIR / "make_golden.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.fixture
def isolated_torch_state():
    """compute_case seeds the global generator and runs on one thread: restore both afterwards."""
    threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        yield
    torch.set_num_threads(threads)


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor {value.dtype} {tuple(value.shape)}"
    return repr(value)


def rounding_allowed(recorded_capability: str, capability: str) -> float:
    """The relative difference a golden tolerates: none on the CPU capability it was recorded with."""
    return 0.0 if recorded_capability == capability else ROUNDING


def _mismatch(expected: Any, actual: Any, rounding: float = ROUNDING) -> tuple[str, bool] | None:
    """Why `actual` is not bit-identical to `expected` and whether that is within `rounding`, or None."""
    if not isinstance(expected, torch.Tensor) or not isinstance(actual, torch.Tensor):
        return None if type(expected) is type(actual) and expected == actual else \
            (f"expected {_describe(expected)}, got {_describe(actual)}", False)
    if expected.dtype != actual.dtype or expected.shape != actual.shape:
        return f"expected {_describe(expected)}, got {_describe(actual)}", False
    if torch.equal(expected, actual):
        return None
    differ = (expected != actual)
    if expected.is_floating_point():
        diff = (expected.double() - actual.double()).abs().max().item()
        scale = expected.double().abs().max().item()
        return (f"{int(differ.sum())}/{expected.numel()} elements differ, max abs diff {diff:.3e} "
                f"(max |expected| {scale:.3e})", diff <= rounding * scale)
    return f"{int(differ.sum())}/{expected.numel()} elements differ", False


def _name_diff(what: str, expected: list[str], actual: list[str]) -> str:
    missing = [n for n in expected if n not in actual]
    extra = [n for n in actual if n not in expected]
    if not missing and not extra:
        return f"{what}: same names in another order"
    return f"{what}: missing {missing}, unexpected {extra}"


def test_last_bit_differences_fail_on_the_recording_cpu():
    expected = torch.tensor([1.0, 2.0])
    actual = torch.nextafter(expected, torch.tensor(3.0))
    same_cpu = _mismatch(expected, actual, rounding_allowed("AVX512", "AVX512"))
    other_cpu = _mismatch(expected, actual, rounding_allowed("AVX512", "AMX"))
    assert same_cpu is not None and not same_cpu[1]
    assert other_cpu is not None and other_cpu[1]


def test_every_registered_model_has_a_golden(maker):
    """Each preset of every family in the registry (or the family, where it has none) is run by a golden case:
    the recorded files, and the cases make_golden.py would record."""
    recorded = {maker.case_model(case) for family in GOLDENS
                for case in torch.load(GOLDEN_DIR / f"{family}.pt", weights_only=True)["cases"].values()}
    assert sorted(set(maker.models_to_cover()) - recorded) == []
    assert sorted(maker.families()) == GOLDENS


@pytest.mark.timeout(120)
@pytest.mark.parametrize("family", GOLDENS)
def test_golden_outputs(family: str, maker, isolated_torch_state) -> None:
    golden = torch.load(GOLDEN_DIR / f"{family}.pt", weights_only=True)
    assert golden["format"] == maker.FORMAT and golden["family"] == family
    where = (f"recorded from {golden['source'] or '?'} with torch {golden['torch_version']} "
             f"({golden['cpu_capability']}); now torch {torch.__version__} "
             f"({torch.backends.cpu.get_cpu_capability()})")
    tolerance = rounding_allowed(golden["cpu_capability"], torch.backends.cpu.get_cpu_capability())
    for case_name, recorded in golden["cases"].items():
        case = {k: v for k, v in recorded.items() if k not in RECORD_KEYS}
        actual = maker.compute_case(case)
        label = f"{family}/{case_name}"

        for key in ("param_names", "state_dict_keys"):
            assert actual[key] == recorded[key], f"{label}: {_name_diff(key, recorded[key], actual[key])}"

        expected_t, actual_t = recorded["tensors"], actual["tensors"]
        problems = [f"{name}: missing from the recomputation" for name in expected_t if name not in actual_t]
        problems += [f"{name}: not in the golden" for name in actual_t if name not in expected_t]
        rounding = []
        for name, value in expected_t.items():
            if name in actual_t:
                mismatch = _mismatch(value, actual_t[name], tolerance)
                if mismatch is not None:
                    (rounding if mismatch[1] else problems).append(f"{name}: {mismatch[0]}")
        assert not problems, (f"{label}: {len(problems)} of {len(expected_t)} recorded values differ beyond "
                              f"rounding ({where}):\n  " + "\n  ".join(problems))
        if rounding:
            warnings.warn(f"{label}: {len(rounding)} of {len(expected_t)} recorded values differ in their last "
                          f"bits only (within {tolerance:g}; {where}), first: {rounding[0]}", stacklevel=1)
