"""bf16 autocast (precision=bf16) against fp32 on a fixed batch: same weights, same views, the loss
and the gradients agree to bf16 accuracy for every registered method."""

import pytest
import torch

from ssl_bench.methods.base import StepState
from tests.methods.test_methods import VARIANTS, _method, _views


@pytest.mark.parametrize("name,extra", VARIANTS, ids=[f"{m}{''.join(e)}" for m, e in VARIANTS])
def test_bf16_loss_and_gradients_close_to_fp32(name, extra):
    cfg, m = _method(name, extra, n_local=2)
    m.train()
    views = _views(2, b=16)
    st = StepState(0, 1, 10, 20, {k: f(0, 10, 20) for k, f in m.schedules().items()})
    state = {k: v.clone() for k, v in m.state_dict().items()}
    results = []
    for bf16 in (False, True):
        m.load_state_dict(state)  # same weights and buffers (centers, queues) for both passes
        m.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = m.training_step(views, st)["loss"]
        loss.backward()
        grads = torch.cat([p.grad.flatten().float() for p in m.parameters() if p.grad is not None])
        results.append((loss.detach().float(), grads))
    (l32, g32), (l16, g16) = results
    assert torch.allclose(l16, l32, rtol=0.03, atol=0.03), f"{name}: bf16 loss {l16:.4f} vs fp32 {l32:.4f}"
    cos = torch.nn.functional.cosine_similarity(g16, g32, dim=0)
    assert cos > 0.95, f"{name}: bf16 gradient direction differs from fp32 (cosine {cos:.3f})"
