"""HRM x LM hybrid: gate equivalences, gradients, one-step gradient, losses, masks, diagnostics."""
from __future__ import annotations

import copy

import pytest
import torch

from hrm_ray.models.hrm_lm import HRMLanguageModel, HRMLMConfig

VOCAB = 40


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_config(**overrides) -> HRMLMConfig:
    cfg = HRMLMConfig(vocab_size=VOCAB, d_model=32, n_heads=4, encoder_layers=1, decoder_layers=1, mlp_ratio=2.0)
    cfg.mamba.d_state, cfg.mamba.headdim, cfg.mamba.chunk_size = 8, 16, 4
    for key, value in overrides.items():
        section, _, name = key.rpartition(".")
        setattr(getattr(cfg, section) if section else cfg, name, value)
    return cfg


def random_batch(batch: int = 3, enc_len: int = 7, dec_len: int = 5, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    enc_mask = torch.ones(batch, enc_len, dtype=torch.bool)
    enc_mask[0, enc_len - 2:] = False  # right padding
    labels = torch.randint(4, VOCAB, (batch, dec_len), generator=g)
    labels[-1, dec_len - 1] = -100
    return {"encoder_ids": torch.randint(4, VOCAB, (batch, enc_len), generator=g), "encoder_mask": enc_mask,
            "decoder_input_ids": torch.randint(4, VOCAB, (batch, dec_len), generator=g), "labels": labels,
            "decoder_mask": labels != -100}


def model_for(cfg: HRMLMConfig, seed: int = 0) -> HRMLanguageModel:
    torch.manual_seed(seed)
    return HRMLanguageModel(cfg).eval()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("mode", ["residual", "prefix"])
@pytest.mark.parametrize("backend", ["transformer", "mamba2"])
def test_gate_closed_is_the_model_without_hrm(mode: str, backend: str) -> None:
    cfg = tiny_config(encoder_backend=backend, **{"bridge.mode": mode, "hrm.deep_supervision": True})
    full = model_for(cfg)
    plain_cfg = copy.deepcopy(cfg)
    plain_cfg.hrm.enabled = False
    plain = HRMLanguageModel(plain_cfg).eval()
    missing, unexpected = plain.load_state_dict(full.state_dict(), strict=False)
    assert not missing and unexpected and all(k.startswith(("hrm.", "bridge.")) for k in unexpected)
    batch = random_batch()
    with torch.no_grad():
        closed, reference = full(batch, gate_scale=0.0), plain(batch)
    if mode == "residual":
        assert torch.equal(closed.logits, reference.logits)  # memory = E + 0 * W z_H is E, bit for bit
    else:
        torch.testing.assert_close(closed.logits, reference.logits, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(closed.losses["ce"], reference.loss, rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        opened = full(batch, gate_scale=1.0)
    assert not torch.allclose(opened.logits, reference.logits, atol=1e-6)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("mode", ["residual", "prefix"])
def test_gate_open_trains_the_hrm(mode: str) -> None:
    model = model_for(tiny_config(**{"bridge.mode": mode, "hrm.use_halting": True, "hrm.halt_target": 0.3}))
    model.train()
    model(random_batch(), gate_scale=torch.tensor(0.5)).loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
    hrm_ids = {id(p) for p in model.hrm_parameters()}
    named = {id(p): n for n, p in model.named_parameters()}
    assert {named[i].split(".")[0] for i in hrm_ids} == {"hrm", "bridge"}
    for p in model.hrm_parameters():
        assert p.grad.abs().sum() > 0, named[id(p)]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("deep_supervision", [False, True])
@pytest.mark.parametrize("one_step", [True, False])
def test_one_step_gradient(deep_supervision: bool, one_step: bool) -> None:
    cfg = tiny_config(**{"hrm.h_cycles": 2, "hrm.l_cycles": 3, "hrm.one_step_grad": one_step,
                         "hrm.deep_supervision": deep_supervision})
    model = model_for(cfg).train()
    calls: dict[str, list[bool]] = {"L": [], "H": []}
    model.hrm.L.register_forward_hook(lambda *_: calls["L"].append(torch.is_grad_enabled()))
    model.hrm.H.register_forward_hook(lambda *_: calls["H"].append(torch.is_grad_enabled()))
    model(random_batch()).loss.backward()
    if not one_step:
        expected_L, expected_H = [True] * 6, [True] * 2
    elif deep_supervision:  # every cycle supervised: its last L and its H update carry gradient
        expected_L, expected_H = [False, False, True] * 2, [True, True]
    else:
        expected_L, expected_H = [False] * 5 + [True], [False, True]
    assert calls == {"L": expected_L, "H": expected_H}


@pytest.mark.timeout(30)
def test_deep_supervision_and_halting_terms() -> None:
    cfg = tiny_config(**{"hrm.h_cycles": 3, "hrm.deep_supervision": True, "hrm.ds_weight": 0.3,
                         "hrm.use_halting": True, "hrm.halting_weight": 0.5, "hrm.halt_target": 0.2})
    model = model_for(cfg).train()
    out = model(random_batch())
    assert set(out.losses) == {"ce", "act", "deep_supervision", "halting"}
    assert all(torch.isfinite(v) for v in out.losses.values())
    assert out.losses["halting"] > 0
    # ACT: the CE term weights every cycle by the probability of halting there (the last one is "ce")
    expected = out.losses["act"] + 0.3 * out.losses["deep_supervision"] + out.losses["halting"]
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    assert model.hrm.halt_head.weight.grad.abs().sum() > 0
    closed = model(random_batch(), gate_scale=0.0)
    assert closed.losses["halting"] == 0  # the penalty is scaled by the (effective) gate


@pytest.mark.timeout(30)
def test_loss_is_token_mean_and_counts_tokens() -> None:
    model = model_for(tiny_config(**{"hrm.enabled": False}))
    batch = random_batch()
    out = model(batch)
    assert out.num_tokens.dtype == torch.long and out.num_tokens == (batch["labels"] != -100).sum()
    manual = torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100)
    torch.testing.assert_close(out.loss, manual)


@pytest.mark.timeout(30)
def test_diagnostics_are_detached_scalars() -> None:
    model = model_for(tiny_config(**{"hrm.use_halting": True})).train()
    diag = model(random_batch(), gate_scale=1.0).diagnostics
    assert set(diag) == {"gate_mean", "gate_min", "gate_max", "gate_sat_low", "gate_sat_high", "gate_raw_mean",
                         "halt_sum_mean", "halt_sum_min", "halt_sum_max", "cycles_used"}
    for name, value in diag.items():
        assert isinstance(value, torch.Tensor) and value.dim() == 0 and not value.requires_grad, name
    assert 0 < diag["gate_min"] <= diag["gate_mean"] <= diag["gate_max"] < 1
    torch.testing.assert_close(diag["gate_mean"], torch.sigmoid(torch.tensor(-2.2)), atol=0.02, rtol=0)
    plain = model_for(tiny_config(**{"hrm.use_halting": False}))(random_batch()).diagnostics
    assert "halt_sum_mean" not in plain and plain["cycles_used"] == 2


@pytest.mark.timeout(30)
def test_decoder_is_causal() -> None:
    model = model_for(tiny_config())
    batch = random_batch()
    changed = {**batch, "decoder_input_ids": batch["decoder_input_ids"].clone()}
    changed["decoder_input_ids"][:, 3] = (changed["decoder_input_ids"][:, 3] + 1) % VOCAB
    with torch.no_grad():
        a, b = model(batch).logits, model(changed).logits
    torch.testing.assert_close(a[:, :3], b[:, :3], rtol=0, atol=1e-6)
    assert not torch.allclose(a[:, 3:], b[:, 3:])


@pytest.mark.timeout(30)
@pytest.mark.parametrize("backend", ["transformer", "mamba2"])
@pytest.mark.parametrize("mode", ["residual", "prefix"])
def test_encoder_padding_is_masked(backend: str, mode: str) -> None:
    model = model_for(tiny_config(encoder_backend=backend, **{"bridge.mode": mode}))
    batch = random_batch(batch=1)
    batch["encoder_mask"][:] = True
    ids, mask = batch["encoder_ids"], batch["encoder_mask"]
    junk = torch.randint(4, VOCAB, (1, 3))
    no_mask = torch.zeros(1, 3, dtype=torch.bool)
    right = {**batch, "encoder_ids": torch.cat((ids, junk), 1), "encoder_mask": torch.cat((mask, no_mask), 1)}
    left = {**batch, "encoder_ids": torch.cat((junk, ids), 1), "encoder_mask": torch.cat((no_mask, mask), 1)}
    with torch.no_grad():
        reference = model(batch, gate_scale=1.0).logits
        for padded in (right, left):
            torch.testing.assert_close(model(padded, gate_scale=1.0).logits, reference, rtol=1e-5, atol=1e-5)


def test_tied_embeddings_and_vocab_check() -> None:
    model = model_for(tiny_config())
    assert model.lm_head.weight is model.embed.weight
    assert "lm_head.weight" in model.state_dict()
    with pytest.raises(ValueError, match="vocab_size"):
        HRMLanguageModel(tiny_config(vocab_size=0))


@pytest.mark.timeout(30)
@pytest.mark.parametrize("backend", ["transformer", "mamba2"])
@pytest.mark.parametrize("mode", ["residual", "prefix"])
def test_forward_backward(backend: str, mode: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="hrm_ray.models.hrm_lm.encoder")
    cfg = tiny_config(encoder_backend=backend, **{"bridge.mode": mode, "hrm.deep_supervision": True,
                                                   "hrm.use_halting": True})
    model = model_for(cfg).train()
    out = model(random_batch(), gate_scale=1.0)
    assert out.logits.shape == (3, 5, VOCAB) and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    expected = "mamba2/pytorch-ssd" if backend == "mamba2" else "transformer"
    assert model.encoder.kernel_path == expected
    assert f"encoder backend: {expected}" in caplog.text
