"""SwAV ``preset=paper`` step for step beside facebookresearch/swav (main_swav.train with its Sinkhorn, the
multi-crop ResNet with projection head and prototypes, apex's LARC around SGD, the np.linspace warm-up and
cosine LR, the prototype freeze and normalisation)."""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import tempfile
from pathlib import Path
from unittest import mock

import pytest
import torch

from tests.parity import harness as H

# The recipe on ResNet-18 with the CIFAR stem, 2 global crops of 32 px and 2 local of 16 px, a 64-wide
# projector to 32-d and 40 prototypes; LARC (eta 0.001, no clip) around SGD with momentum, every parameter
# adapted and decayed, the warm-up from --start_warmup (scaled to this batch: 1/16 of the peak, as 0.3 of
# 4.8) and the cosine to --final_lr, temperature 0.1, Sinkhorn 3 iterations at epsilon 0.05 on crops 0 and
# 1, prototypes frozen for the first epoch. 3 epochs of 5 steps: the warm-up ends and the prototypes thaw
# at step 5.
BATCH, EPOCHS, SPE, HIDDEN, DIM, K = 16, 3, 5, 64, 32, 40
OVERRIDES = [
    "method=swav",
    "preset=paper",
    "backbone=resnet18",
    "backbone.img_size=32",
    "backbone.channels_last=false",  # the reference's contiguous convolutions (see test_moco_v3.py)
    "data.global_size=32",
    "data.local_size=16",
    "data.n_local=2",
    "method.n_local=2",
    f"method.hidden_dim={HIDDEN}",
    f"method.out_dim={DIM}",
    f"method.n_prototypes={K}",
    f"optim.batch_size={BATCH}",
    f"optim.epochs={EPOCHS}",
    "optim.warmup_epochs=1",
    f"optim.warmup_start_lr={0.3 * BATCH / 256 / 16}",
    "optim.min_lr=0.0003",
    "device=cpu",
    "threads=0",
]
# fp32 on the CPU: summation order alone, ~1e-7 relative in the loss. Bounded apart: the last BatchNorm of
# each residual branch (zero-initialised, amplified by LARS: see test_moco_v3.py), and the reference's
# projector bias before its BatchNorm, which the suite's projector (lightly's) does not have: it starts at 0
# here and gets no gradient (the BatchNorm removes any shift), so it stays at rounding noise.
LOSS_TOL, PARAM_TOL, APART_TOL = 1e-5, 1e-5, 3e-4
APART = lambda k: (".bn2." in k and k.startswith("layer")) or k == "projection_head.0.bias"  # noqa: E731


def views(step: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(4000 + step)
    return [torch.randn(BATCH, 3, s, s, generator=g) for s in (32, 32, 16, 16)]


# suite ``backbone.model.X`` / ``projector.layers.i`` / ``prototypes.heads.0`` -> the reference ResNet's ``X``
# / ``projection_head.i`` / ``prototypes``
_ref_name = H.prefix_map(
    (("backbone.model.", ""), ("projector.layers.", "projection_head."), ("prototypes.heads.0.", "prototypes."))
)


def _suite_state(method) -> dict[str, torch.Tensor]:
    # the reference's projector bias before its BatchNorm, which the suite's has not: 0 (see APART)
    return H.mapped(method.state_dict(), _ref_name) | {"projection_head.0.bias": torch.zeros(HIDDEN)}


def _flags(cfg, data: Path, dump: Path) -> list[str]:
    """The recipe as main_swav.py's flags (as scripts/swav_800ep_pretrain.sh passes them), at the harness's
    sizes; the LR scaled to this batch as the suite scales it (the script's 4.8 is 0.3 x 4096 / 256)."""
    m, o, d = cfg.method, cfg.optim, cfg.data
    flags = {
        "data_path": data,
        "nmb_crops": [2, d.n_local],
        "size_crops": [d.global_size, d.local_size],
        "min_scale_crops": [d.global_scale[0], d.local_scale[0]],
        "max_scale_crops": [d.global_scale[1], d.local_scale[1]],
        "crops_for_assign": [0, 1],
        "temperature": m.temperature,
        "epsilon": m.sinkhorn_epsilon,
        "sinkhorn_iterations": m.sinkhorn_iterations,
        "feat_dim": DIM,
        "nmb_prototypes": K,
        "hidden_mlp": HIDDEN,
        "queue_length": 0,
        "epochs": o.epochs,
        "batch_size": BATCH,
        "base_lr": o.lr * BATCH / 256,
        "final_lr": o.min_lr,
        "freeze_prototypes_niters": int(m.freeze_prototypes_epochs * SPE),
        "wd": o.weight_decay,
        "warmup_epochs": int(o.warmup_epochs),
        "start_warmup": o.warmup_start_lr,
        "workers": 0,
        "use_fp16": "false",  # fp32: apex's amp is never reached
        "sync_bn": "none",  # one process: SyncBatchNorm is BatchNorm (and refuses CPU tensors)
        "dump_path": dump,
    }
    return H.argv(flags)


def reference_run(cfg, init, tmp: Path):
    """main_swav.main() with the recipe's flags builds the model, LARC around SGD and the LR schedule; it is
    stopped where it calls train(), which then runs from the suite's weights over the harness's views.
    Shims: a ResNet-18 with the CIFAR stem as its ``--arch`` (a 3x3/1 first convolution, no padding layer,
    no max-pool), the harness's 1-process group for its init_distributed_mode, a DDP stand-in, and a quiet
    logger for its initialize_exp (which pickles the arguments and replaces every root log handler)."""
    m, o = cfg.method, cfg.optim
    with H.apex_larc_only():
        main_swav, resnet_mod = H.import_reference("swav", "main_swav", "src.resnet50")

    def cifar_resnet18(**kwargs):
        net = resnet_mod.ResNet(resnet_mod.BasicBlock, [2, 2, 2, 2], **kwargs)
        net.padding = torch.nn.Identity()
        net.conv1 = torch.nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = torch.nn.Identity()
        return net

    def one_process(args):
        args.rank, args.world_size, args.gpu_to_work_on = 0, 1, 0

    (tmp / "dump").mkdir()
    argv = ["main_swav.py", *_flags(cfg, H.image_folder(tmp / "data", SPE * BATCH), tmp / "dump")]
    quiet = (logging.getLogger("ssl_bench.parity.swav"), None)
    with contextlib.ExitStack() as stack:
        stack.enter_context(H.cpu_single_process())
        stack.enter_context(mock.patch.object(sys, "argv", argv))
        stack.enter_context(mock.patch.object(main_swav.resnet_models, "resnet50", cifar_resnet18))
        stack.enter_context(mock.patch.object(main_swav, "init_distributed_mode", one_process))
        stack.enter_context(mock.patch.object(main_swav, "initialize_exp", lambda *a, **k: quiet))
        ddp = mock.patch.object(torch.nn.parallel, "DistributedDataParallel", lambda module, **k: H.DDPShim(module))
        stack.enter_context(ddp)
        setup = H.setup_of(main_swav.main, main_swav, "train")
    model, optimizer, lr_schedule = setup["model"], setup["optimizer"], setup["lr_schedule"]
    net = model.module
    src = {_ref_name(k): v for k, v in init.items() if _ref_name(k)}
    src["projection_head.0.bias"] = torch.zeros(HIDDEN)
    H.load_mapped(net, src, lambda k: k)  # type: ignore[arg-type]
    assert main_swav.args.freeze_prototypes_niters == int(m.freeze_prototypes_epochs * SPE)
    sgd = optimizer.optim
    meters: list = []

    class Meter(main_swav.AverageMeter):  # train() keeps each step's loss in its third meter
        def __init__(self):
            super().__init__()
            self.seen: list[float] = []
            meters.append(self)

        def update(self, val, n=1):
            self.seen.append(float(val))
            super().update(val, n)

    records: list[H.StepRecord] = []

    def record() -> None:
        g = optimizer.param_groups[0]
        vals = {"lr": g["lr"], "wd": g["weight_decay"], "wd_min": H.min_weight_decay(sgd)}
        state = H.mapped(net.state_dict(), lambda k: k)
        with torch.no_grad():  # the reference normalises the prototypes at the start of the next step
            state["prototypes.weight"] = torch.nn.functional.normalize(state["prototypes.weight"], dim=1)
        records.append(H.StepRecord(meters[-1].seen[-1], vals, H.snapshot(state)))

    class Loader:
        def __init__(self):
            self.count = 0

        def __len__(self):
            return SPE

        def __iter__(self):
            for i in range(SPE):
                if i:
                    record()
                yield views(self.count)
                self.count += 1
            record()

    loader = Loader()
    with H.cpu_single_process(), mock.patch.object(main_swav, "AverageMeter", Meter):
        with contextlib.redirect_stdout(io.StringIO()):
            for epoch in range(o.epochs):
                main_swav.train(loader, model, optimizer, epoch, lr_schedule, None)
    return records


def run() -> H.Comparison:
    ours = H.suite_steps(OVERRIDES, views, EPOCHS * SPE, SPE, _suite_state)
    with tempfile.TemporaryDirectory(prefix="ssl-bench-parity-swav-") as tmp:
        theirs = reference_run(ours.cfg, ours.init, Path(tmp))
    return H.compare("swav", ours.records, theirs, LOSS_TOL, PARAM_TOL, apart=APART, apart_tol=APART_TOL)


@pytest.mark.skipif(H.skip_reason("swav") is not None, reason=str(H.skip_reason("swav")))
@pytest.mark.skipif(H.skip_reason("apex") is not None, reason=str(H.skip_reason("apex")))
def test_swav_paper_step_equals_the_reference():
    c = run()
    print(c.line())
    assert not c.first_difference, c.line()
