import math

import torch
import torch.nn.functional as F

from ssl_bench.config import build_config
from ssl_bench.engine.train import build_method, ema_update, make_optimizer, resolve
from ssl_bench.methods.base import StepState, multicrop_forward
from tests.conftest import TINY


def ref_dino_loss(t_out, s_out, center, t_temp, s_temp):
    """Independent formula: mean over pairs (t, s), t != s, of CE(softmax((t-c)/Tt), log_softmax(s/Ts))."""
    total, n = 0.0, 0
    for i, t in enumerate(t_out):
        q = F.softmax((t - center) / t_temp, dim=-1)
        for j, s in enumerate(s_out):
            if i != j:
                total = total + (-q * F.log_softmax(s / s_temp, dim=-1)).sum(-1).mean()
                n += 1
    return total / n


def _dino(*over):
    cfg = resolve(
        build_config(
            TINY
            + [
                "method=dino",
                "method.out_dim=64",
                "method.hidden_dim=32",
                "method.bottleneck_dim=16",
                "data.n_local=2",
                *over,
            ]
        )
    )
    return cfg, build_method(cfg)


def _views(b=4):
    torch.manual_seed(1)
    return [torch.randn(b, 3, 16, 16) for _ in range(2)] + [torch.randn(b, 3, 8, 8) for _ in range(2)]


def _state(method, step=0, epoch=1):
    values = {k: f(step, 10, 100) for k, f in method.schedules().items()}
    return StepState(step, epoch, 10, 100, values)


def test_loss_matches_independent_formula_and_center_update():
    cfg, m = _dino("method.center_momentum=0.9")
    m.criterion.center.fill_(0.3)
    views = _views()
    st = _state(m)
    with torch.no_grad():
        t_out = multicrop_forward(m.teacher, views[:2])
        s_out = multicrop_forward(m.student, views)
    expected = ref_dino_loss(t_out, s_out, 0.3, st.values["teacher_temp"], cfg.method.student_temp)
    out = m.training_step(views, st)
    assert torch.allclose(out["loss"], expected, atol=1e-5)
    new_center = 0.9 * 0.3 + 0.1 * torch.cat(t_out).mean(0)
    assert torch.allclose(m.criterion.center.flatten(), new_center, atol=1e-6)
    # KL = CE - H(teacher) >= 0 and entropies within [0, ln K]
    assert out["kl"] >= -1e-5
    assert 0 <= out["teacher_entropy"] <= math.log(64) + 1e-5


def test_centering_off_keeps_center_zero_and_logits_uncentred():
    cfg, m = _dino("method.centering=false")
    views = _views()
    for step in range(3):
        m.training_step(views, _state(m, step))
    assert torch.count_nonzero(m.criterion.center) == 0
    with torch.no_grad():
        t_out = multicrop_forward(m.teacher, views[:2])
        s_out = multicrop_forward(m.student, views)
    uncentred = ref_dino_loss(t_out, s_out, 0.0, cfg.method.teacher_temp, cfg.method.student_temp)
    assert torch.allclose(m.training_step(views, _state(m))["loss"], uncentred, atol=1e-5)


def test_sharpening_off_means_equal_temperatures():
    cfg, m = _dino("method.teacher_temp=0.1", "method.warmup_teacher_temp=0.1")
    assert _state(m).values["teacher_temp"] == cfg.method.student_temp


def test_teacher_warmup_schedule_is_linear_per_step():
    cfg, m = _dino("method.warmup_teacher_temp=0.02", "method.teacher_temp=0.06", "method.warmup_teacher_temp_epochs=2")
    f = m.schedules()["teacher_temp"]
    assert f(0, 10, 100) == 0.02 and abs(f(10, 10, 100) - 0.04) < 1e-9 and f(20, 10, 100) == 0.06


def test_teacher_momentum_cosine_end_point():
    """Paper default: 0.996 -> 1 at the last step; momentum_teacher_end stops the anneal (short presets)."""
    assert build_config(["method=dino", "preset=paper"]).method.momentum_teacher_end == 1.0
    _, m = _dino("method.momentum_teacher=0.996", "method.momentum_teacher_end=1.0")
    f = m.schedules()["momentum"]
    assert f(0, 10, 100) == 0.996 and f(99, 10, 100) == 1.0 and 0.996 < f(50, 10, 100) < 1.0
    _, m = _dino("method.momentum_teacher=0.99", "method.momentum_teacher_end=0.99")
    assert {m.schedules()["momentum"](s, 10, 100) for s in (0, 50, 99)} == {0.99}
    assert build_config(["method=dino", "preset=cifar10-cpu"]).method.momentum_teacher_end == 0.99


def test_teacher_gets_no_gradient_and_moves_only_by_ema():
    cfg, m = _dino()
    opt = make_optimizer(cfg.optim, m)
    for g in opt.param_groups:
        g["lr"] = 0.1
    t0 = [p.detach().clone() for p in m.teacher.parameters()]
    st = _state(m, epoch=1)
    m.training_step(_views(), st)["loss"].backward()
    assert all(p.grad is None and not p.requires_grad for p in m.teacher.parameters())
    assert all(p is not q for p in m.teacher.parameters() for q in opt.param_groups[0]["params"])
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(t0, m.teacher.parameters()))  # optimiser left it alone
    mom = 0.9
    pairs = [(list(o.parameters()), list(t.parameters())) for o, t in m.ema_pairs()]
    ema_update(pairs, mom)
    for before, s, t in zip(t0, m.student.parameters(), m.teacher.parameters()):
        assert torch.allclose(t, mom * before + (1 - mom) * s, atol=1e-6)
    assert any(not torch.equal(a, b) for a, b in zip(t0, m.teacher.parameters()))


def test_last_layer_frozen_in_first_epoch():
    cfg, m = _dino("method.freeze_last_layer=1")
    m.training_step(_views(), _state(m, epoch=0))["loss"].backward()
    m.after_backward(_state(m, epoch=0))
    assert all(p.grad is None for p in m.student.head.last_layer.parameters())
    m.zero_grad()
    m.training_step(_views(), _state(m, epoch=1))["loss"].backward()
    m.after_backward(_state(m, epoch=1))
    assert any(p.grad is not None for p in m.student.head.last_layer.parameters())


def test_grouped_multicrop_forward_equals_per_crop():
    cfg, m = _dino()
    m.eval()
    views = _views()
    grouped = multicrop_forward(m.student, views)
    single = [m.student(v) for v in views]
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(grouped, single))


def test_collapse_flag():
    cfg, m = _dino()
    lk = math.log(64)
    assert m.collapsed({"kl": 0.01, "teacher_entropy": 0.01, "teacher_mean_entropy": 0.01}) is True
    assert m.collapsed({"kl": 0.01, "teacher_entropy": 0.99 * lk, "teacher_mean_entropy": lk}) is True
    assert m.collapsed({"kl": 1.0, "teacher_entropy": 1.0, "teacher_mean_entropy": 3.5}) is False
