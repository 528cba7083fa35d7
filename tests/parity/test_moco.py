"""MoCo v2 ``preset=paper`` step for step beside facebookresearch/moco (builder.MoCo with --mlp, the
queue and shuffle-BN, main_moco.train's SGD step and adjust_learning_rate --cos)."""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path
from unittest import mock

import pytest
import torch
import torch.distributed as dist
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


def _flags(cfg, data: Path) -> list[str]:
    """The recipe as main_moco.py's flags (the README's MoCo v2 command: --mlp --moco-t 0.2 --aug-plus
    --cos), at the harness's sizes; the LR scaled to this batch by the README's linear rule, which
    main_moco.py leaves to the user."""
    m, o = cfg.method, cfg.optim
    argv = ["-a", "resnet18", "-b", str(BATCH), "--lr", str(o.lr * BATCH / 256), "-j", "0", "-p", str(10**9)]
    argv += ["--epochs", str(o.epochs), "--wd", str(o.weight_decay), "--momentum", str(o.momentum)]
    argv += [
        "--moco-dim",
        str(DIM),
        "--moco-k",
        str(QUEUE),
        "--moco-m",
        str(m.momentum),
        "--moco-t",
        str(m.temperature),
    ]
    return argv + ["--mlp", "--aug-plus", "--cos", str(data)]


def reference_run(cfg, init, tmp: Path):
    """main_moco.main_worker with the recipe's flags builds builder.MoCo, its criterion and SGD; it is
    stopped where it calls train(), which then runs, after adjust_learning_rate each epoch, from the suite's
    weights over the harness's views. Shims: ResNet-18 with the CIFAR stem as its ``--arch``, the harness's
    1-process group for the one it starts, a DDP stand-in."""
    (main_moco,) = H.import_reference("moco", "main_moco")
    o = cfg.optim

    args = main_moco.parser.parse_args(_flags(cfg, H.image_folder(tmp, SPE * BATCH).parent))
    args.distributed, args.rank, args.world_size = True, 0, 1
    with contextlib.ExitStack() as stack:
        stack.enter_context(H.cpu_single_process())
        stack.enter_context(mock.patch.object(dist, "init_process_group", lambda *a, **k: None))
        stack.enter_context(mock.patch.object(torchvision.models, "resnet18", H.cifar_resnet18))
        ddp = mock.patch.object(torch.nn.parallel, "DistributedDataParallel", lambda module, **k: H.DDPShim(module))
        stack.enter_context(ddp)
        stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        setup = H.setup_of(lambda: main_moco.main_worker(None, 1, args), main_moco, "train")
    model, criterion, optimizer = setup["model"], setup["criterion"], setup["optimizer"]
    src = {_ref_name(k): v for k, v in init.items() if _ref_name(k)}
    src["queue"], src["queue_ptr"] = init["queue"][0].t(), init["queue_ptr"].reshape(1)
    H.load_mapped(model.module, src, lambda k: k)
    records: list[H.StepRecord] = []
    seen: list[float] = []

    def recorded(output, target):  # its criterion, the value kept
        loss = criterion(output, target)
        seen.append(loss.item())
        return loss

    def record():
        g = optimizer.param_groups[0]
        vals = {
            "lr": g["lr"],
            "wd": g["weight_decay"],
            "wd_min": H.min_weight_decay(optimizer),
            "momentum": model.module.m,
        }
        state = H.mapped(model.module.state_dict(), lambda k: k)
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
            main_moco.train(Loader(epoch), model, recorded, optimizer, epoch, args)
    return records


def run() -> H.Comparison:
    ours = H.suite_steps(OVERRIDES, views, EPOCHS * SPE, SPE, _state, seed=7)  # 7: shuffle-BN's permutations
    with tempfile.TemporaryDirectory(prefix="ssl-bench-parity-moco-") as tmp:
        theirs = reference_run(ours.cfg, ours.init, Path(tmp))
    return H.compare("moco", ours.records, theirs, LOSS_TOL, PARAM_TOL)


@pytest.mark.skipif(H.skip_reason("moco") is not None, reason=str(H.skip_reason("moco")))
def test_moco_v2_paper_step_equals_the_reference():
    c = run()
    print(c.line())
    assert not c.first_difference, c.line()
