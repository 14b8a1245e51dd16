"""Sign-SGD for the sparse puzzle embedding (single process and two gloo workers) and the weight EMA."""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hrm_ray.models.hrm_act_v1 import HRMACTv1
from hrm_ray.models.puzzle import ACTLossHead, PuzzleEmbedding
from hrm_ray.models.registry import default_config
from hrm_ray.train.ema import EMA
from hrm_ray.train.sign_sgd import SparseEmbeddingSignSGD, apply_sign_sgd

pytestmark = pytest.mark.timeout(90)


def test_sign_sgd_updates_only_used_rows():
    w = torch.ones(5, 3)
    ids = torch.tensor([1, 3, 1])
    grads = torch.tensor([[1.0, -2.0, 0.5], [-1.0, 0.0, 2.0], [-3.0, 1.0, 0.5]])
    apply_sign_sgd(w, ids, grads, lr=0.1, weight_decay=0.5)
    decayed = 1 - 0.1 * 0.5
    # row 1: summed grad [-2, -1, 1] -> sign [-1, -1, 1]
    assert torch.allclose(w[1], torch.tensor([decayed + 0.1, decayed + 0.1, decayed - 0.1]))
    assert torch.allclose(w[3], torch.tensor([decayed + 0.1, decayed, decayed - 0.1]))
    assert torch.equal(w[[0, 2, 4]], torch.ones(3, 3))


def test_sign_sgd_is_scale_invariant_and_skips_non_finite_gradients():
    ids, grads = torch.tensor([0, 2]), torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    plain, scaled = torch.ones(3, 2), torch.ones(3, 2)
    apply_sign_sgd(plain, ids, grads, lr=0.1, weight_decay=0.1)
    apply_sign_sgd(scaled, ids, grads * 65536.0, lr=0.1, weight_decay=0.1)   # an fp16 loss scale changes nothing
    assert torch.equal(plain, scaled)
    for bad in (float("inf"), float("nan")):                                 # an overflow skips the update
        w = torch.ones(3, 2)
        apply_sign_sgd(w, ids, torch.tensor([[bad, 1.0], [0.5, 3.0]]), lr=0.1, weight_decay=0.1)
        assert torch.equal(w, torch.ones(3, 2))
    assert SparseEmbeddingSignSGD.scale_invariant  # so the loop steps it outside the GradScaler


def test_sign_sgd_with_the_model():
    torch.manual_seed(0)
    model = HRMACTv1(default_config("hrm_v1", vocab_size=11, seq_len=9, d_model=32, n_heads=2, mlp_ratio=2.0,
                                    h_layers=1, l_layers=1, puzzle_emb_ndim=32, num_puzzle_identifiers=6,
                                    halt_max_steps=2))
    head = ACTLossHead(model).train()
    groups = head.parameter_groups()
    assert len(groups["sparse_embedding"]) == 1
    assert all(p is not model.puzzle_emb.weights for p in groups["dense"])
    opt = SparseEmbeddingSignSGD(groups["sparse_embedding"], lr=0.01, weight_decay=0.1)
    b = {"inputs": torch.randint(1, 11, (4, 9)), "labels": torch.randint(1, 11, (4, 9)),
         "puzzle_identifiers": torch.tensor([2, 2, 4, 5])}
    _, loss, _, _ = head(head.initial_carry(b), b)
    loss.backward()
    before = model.puzzle_emb.weights.clone()
    opt.param_groups[0]["lr"] = 0.05   # schedulers write the lr like for any optimizer
    opt.step()
    opt.zero_grad()
    changed = (model.puzzle_emb.weights != before).any(1)
    assert changed.tolist() == [False, False, True, False, True, True]
    assert torch.allclose((model.puzzle_emb.weights - before)[changed].abs().max(), torch.tensor(0.05))
    assert model.puzzle_emb.local is None
    assert "inner.puzzle_emb.weights" in model.state_dict()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        emb = PuzzleEmbedding(4, 2).train()
        opt = SparseEmbeddingSignSGD([emb], lr=1.0, weight_decay=0.0)
        ids = torch.tensor([0, 1]) if rank == 0 else torch.tensor([1, 2])
        scale = torch.tensor([[1.0, -1.0], [3.0, 1.0]]) if rank == 0 else torch.tensor([[-1.0, -1.0], [1.0, 1.0]])
        (emb(ids) * scale).sum().backward()
        opt.step()
        torch.save(emb.weights, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_rows_are_gathered_across_workers(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    w0, w1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert torch.equal(w0, w1)
    # row 0: [1,-1]; row 1: [3,1]+[-1,-1] = [2,0]; row 2: [1,1]; row 3 untouched
    assert torch.equal(w0, -torch.tensor([[1.0, -1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]))


def test_ema_update_swap_and_state():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, decay=0.5)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(2.0)
    ema.update(model)
    expected = start + 1.0
    assert torch.allclose(ema.shadow["weight"], expected)
    live = model.weight.detach().clone()
    with ema.swapped_in(model):
        assert torch.allclose(model.weight, expected)
    assert torch.equal(model.weight, live)
    other = EMA(model, decay=0.9)
    other.load_state_dict(ema.state_dict())
    assert other.decay == 0.5 and other.num_updates == 1
    assert torch.equal(other.shadow["weight"], ema.shadow["weight"])
    with pytest.raises(ValueError, match="decay"):
        EMA(model, decay=1.5)


def test_ema_can_track_the_puzzle_embedding_buffer():
    emb = PuzzleEmbedding(3, 2)
    ema = EMA(emb, decay=0.0, include_buffers=True)
    with torch.no_grad():
        emb.weights.fill_(1.0)
    ema.update(emb)
    assert torch.equal(ema.shadow["weights"], torch.ones(3, 2))


def test_ema_averages_parameters_only_unless_asked():
    """As the papers' EMA: the sparse puzzle table is not averaged (its rows would lag) unless
    train.ema_puzzle_emb; a checkpoint's EMA saved with the table loads into one without it."""
    torch.manual_seed(0)
    model = HRMACTv1(default_config("hrm_v1", vocab_size=5, seq_len=4, num_puzzle_identifiers=3, puzzle_emb_ndim=8,
                                    d_model=8, n_heads=2, h_layers=1, l_layers=1))
    params_only, with_table = EMA(model, decay=0.5), EMA(model, decay=0.5, include_buffers=True)
    assert "inner.puzzle_emb.weights" not in params_only.shadow
    assert "inner.puzzle_emb.weights" in with_table.shadow
    assert set(params_only.shadow) == {n for n, _ in model.named_parameters()}
    with torch.no_grad():
        model.inner.puzzle_emb.weights.fill_(2.0)
    with params_only.swapped_in(model):   # the live table is evaluated as it is
        assert torch.equal(model.inner.puzzle_emb.weights, torch.full((3, 8), 2.0))
    params_only.load_state_dict(with_table.state_dict())
    assert set(params_only.shadow) == {n for n, _ in model.named_parameters()}
    with pytest.raises(ValueError, match="differing keys"):
        with_table.load_state_dict(params_only.state_dict())
