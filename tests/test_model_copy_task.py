"""The prompt reaches the decoder: copying the prompt (an answer that depends on nothing else)
trains to near-zero loss, with the HRM gate closed as in the warm-up phase."""
from __future__ import annotations

import pytest
import torch

from hrm_ray.data.synthetic import pad_batch
from hrm_ray.models.hrm_lm import HRMLanguageModel
from tests.test_model_hybrid import tiny_config

STEPS, LENGTH, SYMBOLS = 300, 4, 10


pytestmark = pytest.mark.usefixtures("one_thread")


def copy_batch(g: torch.Generator, batch: int = 32) -> dict[str, torch.Tensor]:
    rows = []
    for seq in (torch.randint(0, SYMBOLS, (batch, LENGTH), generator=g) + 4).tolist():
        rows.append({"encoder_ids": seq, "decoder_input_ids": [1, *seq], "labels": [*seq, 2]})
    return pad_batch(rows, 0)


@pytest.mark.timeout(120)
def test_copy_task_trains_to_near_zero_loss() -> None:
    torch.manual_seed(0)
    cfg = tiny_config(vocab_size=4 + SYMBOLS, d_model=64, **{"hrm.h_cycles": 1, "hrm.l_cycles": 1})
    model = HRMLanguageModel(cfg).train()
    frozen = {id(p) for p in model.hrm_parameters()}  # as the trainer does while the gate is closed
    optimizer = torch.optim.AdamW([p for p in model.parameters() if id(p) not in frozen], lr=3e-3,
                                  weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / STEPS)
    g = torch.Generator().manual_seed(0)
    for _ in range(STEPS):
        loss = model(copy_batch(g), gate_scale=0.0).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()
    held_out = copy_batch(torch.Generator().manual_seed(123), batch=256)
    with torch.no_grad():
        final = model(held_out, gate_scale=0.0).loss
    assert final < 0.05, f"copy-task loss {final:.4f}"
    result = model.generate(held_out["encoder_ids"], held_out["encoder_mask"], LENGTH + 1, gate_scale=0.0)
    copied = (result.tokens[:, :LENGTH] == held_out["encoder_ids"]).all(-1).float().mean()
    assert copied > 0.9
