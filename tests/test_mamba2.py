"""Mamba2 block: chunked SSD == sequential recurrence, causality, padding, mamba_ssm parameter layout."""
from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from hrm_ray.models.hrm_lm import mamba2 as mamba2_module
from hrm_ray.models.hrm_lm.mamba2 import Mamba2, segsum, ssd_chunked, ssd_sequential_scan

SMALL = dict(d_model=32, d_state=16, headdim=16, chunk_size=16)


def ssd_inputs(length: int, nheads: int = 8, ngroups: int = 1, headdim: int = 8, dstate: int = 16,
               batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Inputs on the scale the block produces: dt from softplus(. + dt_bias), A = -exp(A_log) in [-16, -1]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, nheads, headdim, generator=g)
    dt = F.softplus(torch.randn(batch, length, nheads, generator=g) - 3.0)
    A = -(1.0 + 15.0 * torch.rand(nheads, generator=g))
    B = torch.randn(batch, length, ngroups, dstate, generator=g)
    C = torch.randn(batch, length, ngroups, dstate, generator=g)
    D = torch.randn(nheads, generator=g)
    return x, dt, A, B, C, D


def test_segsum_values() -> None:
    out = segsum(torch.tensor([-1.0, -2.0, -3.0]))
    inf = float("inf")
    assert torch.equal(out, torch.tensor([[0.0, -inf, -inf], [-2.0, 0.0, -inf], [-5.0, -3.0, 0.0]]))


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "length,chunk_size,ngroups",
    [(1, 32, 1), (7, 32, 2), (64, 64, 1), (64, 32, 4), (100, 32, 2), (257, 64, 1), (257, 32, 4)],
)
def test_chunked_ssd_matches_sequential_scan(length: int, chunk_size: int, ngroups: int) -> None:
    x, dt, A, B, C, D = ssd_inputs(length, ngroups=ngroups)
    expected = ssd_sequential_scan(x, dt, A, B, C, D)
    got = ssd_chunked(x, dt, A, B, C, chunk_size, D)
    assert got.shape == expected.shape == x.shape
    assert (got - expected).abs().max().item() <= 1e-4


@pytest.mark.timeout(30)
def test_chunked_ssd_per_channel_skip_and_gradients_match_sequential() -> None:
    x, dt, A, B, C, _ = ssd_inputs(45, ngroups=2)
    D = torch.randn(x.shape[2], x.shape[3])  # D_has_hdim layout: [heads, headdim]
    leaves = [t.clone().requires_grad_() for t in (x, dt, A, B, C, D)]
    grad_out = torch.randn_like(x)
    grads = []
    for fn in (lambda *a: ssd_chunked(*a[:5], 16, a[5]), ssd_sequential_scan):
        inputs = [t.detach().clone().requires_grad_() for t in leaves]
        y = fn(*inputs)
        y.backward(grad_out)
        grads.append((y.detach(), [t.grad for t in inputs]))
    (y_chunk, g_chunk), (y_seq, g_seq) = grads
    assert (y_chunk - y_seq).abs().max().item() <= 1e-4
    for name, a, b in zip("x dt A B C D".split(), g_chunk, g_seq, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-3), name


def test_chunked_ssd_keeps_input_dtype() -> None:
    x, dt, A, B, C, D = ssd_inputs(20)
    y = ssd_chunked(x.bfloat16(), dt, A, B.bfloat16(), C.bfloat16(), 8, D)
    assert y.dtype == torch.bfloat16
    assert torch.isfinite(y.float()).all()


def expected_mamba_ssm_layout(d_model: int, d_state: int = 128, d_conv: int = 4, expand: int = 2,
                              headdim: int = 64, ngroups: int = 1, D_has_hdim: bool = False,
                              rmsnorm: bool = True, bias: bool = False, conv_bias: bool = True,
                              **_: object) -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape, from the formulas of mamba_ssm.modules.mamba2.Mamba2 (d_ssm=None)."""
    d_inner = expand * d_model
    nheads = d_inner // headdim
    conv_dim = d_inner + 2 * ngroups * d_state
    layout = {
        "in_proj.weight": (2 * d_inner + 2 * ngroups * d_state + nheads, d_model),
        "conv1d.weight": (conv_dim, 1, d_conv),
        "dt_bias": (nheads,),
        "A_log": (nheads,),
        "D": (d_inner,) if D_has_hdim else (nheads,),
        "out_proj.weight": (d_model, d_inner),
    }
    if conv_bias:
        layout["conv1d.bias"] = (conv_dim,)
    if rmsnorm:
        layout["norm.weight"] = (d_inner,)
    if bias:
        layout["in_proj.bias"] = (2 * d_inner + 2 * ngroups * d_state + nheads,)
        layout["out_proj.bias"] = (d_model,)
    return layout


@pytest.mark.parametrize(
    "config",
    [
        dict(d_model=64),
        dict(d_model=64, d_state=32, d_conv=3, expand=3, headdim=16, ngroups=4, D_has_hdim=True),
        dict(d_model=48, headdim=32, rmsnorm=False, bias=True, conv_bias=False),
    ],
)
def test_parameter_names_and_shapes_match_mamba_ssm(config: dict) -> None:
    block = Mamba2(**config)
    got = {name: tuple(t.shape) for name, t in block.state_dict().items()}
    assert got == expected_mamba_ssm_layout(**config)
    if block.rmsnorm:
        assert block.norm.group_size == block.d_inner // block.ngroups


@pytest.mark.timeout(30)
@pytest.mark.parametrize("config", [SMALL, dict(SMALL, ngroups=2, D_has_hdim=True, rmsnorm=False)])
def test_block_is_causal(config: dict) -> None:
    torch.manual_seed(0)
    block = Mamba2(**config).eval()
    x = torch.randn(2, 40, config["d_model"])
    perturbed = x.clone()
    perturbed[:, 23:] = torch.randn(2, 17, config["d_model"]) * 5
    with torch.no_grad():
        a, b = block(x), block(perturbed)
    assert torch.allclose(a[:, :23], b[:, :23], atol=1e-6)
    assert not torch.allclose(a[:, 23:], b[:, 23:], atol=1e-3)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("side", ["right", "left"])
def test_padding_does_not_leak(side: str) -> None:
    torch.manual_seed(0)
    block = Mamba2(**dict(SMALL, ngroups=2)).eval()
    lengths, total = [13, 37], 40  # 37 > chunk_size: padding crosses chunk boundaries
    real = [torch.randn(1, n, SMALL["d_model"]) for n in lengths]
    padded = torch.randn(len(lengths), total, SMALL["d_model"]) * 10  # garbage at pad positions
    mask = torch.zeros(len(lengths), total, dtype=torch.bool)
    spans = []
    for i, n in enumerate(lengths):
        span = slice(0, n) if side == "right" else slice(total - n, total)
        padded[i, span] = real[i][0]
        mask[i, span] = True
        spans.append(span)
    with torch.no_grad():
        out = block(padded, mask)
        for i, span in enumerate(spans):
            alone = block(real[i])[0]
            assert (out[i, span] - alone).abs().max().item() <= 1e-5
            assert torch.all(out[i, ~mask[i]] == 0)


@pytest.mark.timeout(30)
def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    block = Mamba2(**dict(SMALL, ngroups=2, bias=True))
    x = torch.randn(2, 21, SMALL["d_model"])
    mask = torch.ones(2, 21, dtype=torch.bool)
    mask[1, :5] = False
    block(x, mask).pow(2).mean().backward()
    for name, param in block.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_state_dict_round_trip() -> None:
    torch.manual_seed(0)
    source = Mamba2(**SMALL)
    target = Mamba2(**SMALL)
    target.load_state_dict(source.state_dict(), strict=True)
    x = torch.randn(2, 30, SMALL["d_model"])
    with torch.no_grad():
        assert torch.equal(source(x), target(x))


def test_cpu_runs_the_pytorch_path_and_logs_it(caplog: pytest.LogCaptureFixture) -> None:
    mamba2_module._log_path_once.cache_clear()
    block = Mamba2(**SMALL)
    assert block.kernel_path == "pytorch-ssd"
    with caplog.at_level(logging.INFO, logger="hrm_ray.models.hrm_lm.mamba2"):
        block(torch.randn(1, 5, SMALL["d_model"]))
        block(torch.randn(1, 5, SMALL["d_model"]))
    messages = [r.getMessage() for r in caplog.records if "path" in r.getMessage()]
    assert messages == ["Mamba2 runs the pytorch-ssd path"]


def test_bad_mask_and_config_are_clear_errors() -> None:
    block = Mamba2(**SMALL)
    with pytest.raises(ValueError, match="mask must be a bool tensor"):
        block(torch.randn(2, 5, SMALL["d_model"]), torch.ones(2, 5))
    with pytest.raises(ValueError, match="headdim"):
        Mamba2(d_model=30, headdim=16)
    with pytest.raises(ValueError, match="ngroups"):
        Mamba2(d_model=32, headdim=16, ngroups=3)
