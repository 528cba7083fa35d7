"""MoCo v2 ``preset=paper`` step for step beside facebookresearch/moco (builder.MoCo with --mlp, the
queue and shuffle-BN, main_moco.train's SGD step and adjust_learning_rate --cos)."""

from __future__ import annotations

import contextlib
import io
import types
from unittest import mock

import pytest
import torch
import torchvision

from tests.parity import harness as H

# The recipe on ResNet-18 with the CIFAR stem at 32 px (its projector hidden width is the backbone's,
# as --mlp builds it: 512), a 32-d output and a 64-key queue; SGD with momentum, weight decay on every
# parameter, the per-epoch cosine LR, temperature 0.2, EMA 0.999. 3 epochs of 5 steps of 16 images: the
# LR steps at each epoch and the queue wraps every 4 steps. One process: shuffle-BN is one permutation of
# the whole batch (one group), as the reference on one GPU.
BATCH, EPOCHS, SPE, QUEUE, DIM = 16, 3, 5, 64, 32
OVERRIDES = [
    "method=moco",
    "preset=paper",
    "backbone=resnet18",
    "backbone.img_size=32",
    "data.global_size=32",
    "method.hidden_dim=512",
    f"method.out_dim={DIM}",
    f"method.queue_size={QUEUE}",
    "method.shuffle_bn_groups=1",
    f"optim.batch_size={BATCH}",
    f"optim.epochs={EPOCHS}",
    "device=cpu",
    "threads=0",
]
# fp32 on the CPU; the sides differ in summation order (BN statistics over a permuted batch, channels-last
# convolutions): ~1e-7 relative in the loss, parameters and BN running statistics to ~1e-6. SGD's step is
# linear in the gradient, so no tensor is bounded on its own.
LOSS_TOL, PARAM_TOL = 1e-5, 1e-5


def views(step: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(2000 + step)
    return [torch.randn(BATCH, 3, 32, 32, generator=g) for _ in range(2)]


def _ref_name(key: str) -> str | None:
    """suite ``query.backbone.model.X`` / ``query.head.layers.i`` -> ``encoder_q.X`` / ``encoder_q.fc.i``
    (``key`` -> ``encoder_k``); the queue is (K, D) per view here and (D, K) there (mapped by hand)."""
    for ours, theirs in (("query.", "encoder_q."), ("key.", "encoder_k.")):
        if key.startswith(ours):
            key = theirs + key[len(ours) :]
            return key.replace("backbone.model.", "", 1).replace("head.layers.", "fc.", 1)
    return None


def _state(method) -> dict[str, torch.Tensor]:
    state = {_ref_name(k): v for k, v in method.state_dict().items() if _ref_name(k)}
    state["queue"] = method.queue[0].t()
    state["queue_ptr"] = method.queue_ptr.reshape(1)
    return {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}


def cifar_resnet18(num_classes: int) -> torch.nn.Module:
    """The harness's base_encoder: torchvision's ResNet-18 with the CIFAR stem the suite's backbone uses."""
    net = torchvision.models.resnet18(num_classes=num_classes)
    net.conv1 = torch.nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = torch.nn.Identity()
    return net


def reference_run(cfg, init):
    (builder,) = H.import_reference("moco", "moco.builder")
    (main_moco,) = H.import_reference("moco", "main_moco")
    m, o = cfg.method, cfg.optim
    model = builder.MoCo(cifar_resnet18, dim=DIM, K=QUEUE, m=m.momentum, T=m.temperature, mlp=True)
    src = {_ref_name(k): v for k, v in init.items() if _ref_name(k)}
    src["queue"], src["queue_ptr"] = init["queue"][0].t(), init["queue_ptr"].reshape(1)
    H.load_mapped(model, src, lambda k: k)
    optimizer = torch.optim.SGD(
        model.parameters(), o.lr * BATCH / 256, momentum=o.momentum, weight_decay=o.weight_decay
    )  # main_moco.py:291-296, lr as main_moco.py:81 scaled
    args = types.SimpleNamespace(gpu=None, lr=o.lr * BATCH / 256, cos=True, epochs=o.epochs, print_freq=10**9)
    records: list[H.StepRecord] = []
    seen: list[float] = []

    def criterion(output, target):
        loss = torch.nn.functional.cross_entropy(output, target)  # main_moco.py:289 nn.CrossEntropyLoss
        seen.append(loss.item())
        return loss

    def record():
        g = optimizer.param_groups[0]
        vals = {"lr": g["lr"], "wd": g["weight_decay"], "wd_min": H.min_weight_decay(optimizer), "momentum": model.m}
        state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
        records.append(H.StepRecord(seen[-1], vals, H.snapshot(state)))

    class Loader:
        def __init__(self, epoch):
            self.epoch = epoch

        def __len__(self):
            return SPE

        def __iter__(self):
            for i in range(SPE):
                if i:
                    record()
                yield views(self.epoch * SPE + i), None
            record()

    # shim: main_moco.accuracy (logging only) calls .view on a non-contiguous slice, which current torch refuses
    no_acc = mock.patch.object(main_moco, "accuracy", lambda output, target, topk: [torch.zeros(1) for _ in topk])
    torch.manual_seed(7)
    with H.cpu_single_process(), no_acc, contextlib.redirect_stdout(io.StringIO()):
        for epoch in range(o.epochs):
            main_moco.adjust_learning_rate(optimizer, epoch, args)
            main_moco.train(Loader(epoch), model, criterion, optimizer, epoch, args)
    return records


def run() -> H.Comparison:
    ours = H.suite_steps(OVERRIDES, views, EPOCHS * SPE, SPE, _state, seed=7)  # 7: shuffle-BN's permutations
    return H.compare("moco", ours.records, reference_run(ours.cfg, ours.init), LOSS_TOL, PARAM_TOL)


@pytest.mark.skipif(H.skip_reason("moco") is not None, reason=str(H.skip_reason("moco")))
def test_moco_v2_paper_step_equals_the_reference():
    c = run()
    print(c.line())
    assert not c.first_difference, c.line()
