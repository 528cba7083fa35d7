"""DINO ``preset=paper`` step for step beside facebookresearch/dino (main_dino.train_one_epoch, its
DINOLoss, schedules, parameter groups, clipping, last-layer freeze, ViT and DINOHead)."""

from __future__ import annotations

import contextlib
import functools
import io
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

from tests.parity import harness as H

# The recipe on a tiny ViT (depth 2, 32 px, patch 4, 2 local crops of 16 px, a 256-way head), everything
# else the paper recipe's: AdamW, linear-scaled LR with warm-up, cosine LR / weight decay / teacher
# momentum, per-parameter clipping at 3, teacher temperature warm-up 0.04 -> 0.07, last layer frozen for
# epoch 0, norm_last_layer false. 3 epochs of 5 steps: the warm-up ends at step 5, the last layer thaws at
# step 5 and the teacher temperature steps at each epoch. Stochastic depth off on both sides: its random
# masks cannot be drawn alike (the teacher has none in either).
BATCH, EPOCHS, SPE, HIDDEN, BOTTLENECK = 16, 3, 5, 64, 32
OVERRIDES = [
    "method=dino",
    "preset=paper",
    "backbone=vit_tiny",
    "backbone.depth=2",
    "backbone.drop_path_rate=0.0",
    "backbone.pos_embed_interp=dino",  # the paper recipe's; backbone= starts from vit_tiny's defaults
    "data.global_size=32",
    "data.local_size=16",
    "data.n_local=2",
    "method.n_local=2",
    "method.out_dim=256",
    f"method.hidden_dim={HIDDEN}",
    f"method.bottleneck_dim={BOTTLENECK}",
    "method.warmup_teacher_temp_epochs=2",
    f"optim.batch_size={BATCH}",
    f"optim.epochs={EPOCHS}",
    "optim.warmup_epochs=1",
    "device=cpu",
    "threads=0",
]
# fp32 on the CPU: the two sides differ only in summation order (MultiCropWrapper runs the head once on
# all crops, the suite once per resolution), ~1e-7 relative in the loss; parameters and buffers agree to
# a few float32 ulps. The key third of each qkv bias gets no gradient (softmax is shift-invariant per
# query): AdamW turns its rounding-noise gradients into steps of about the LR (peak 3.1e-5 here, 15
# steps), so those tensors are bounded by the LR summed over the run instead.
LOSS_TOL, PARAM_TOL, APART_TOL = 1e-5, 1e-6, 3e-4
APART = lambda name: name.endswith("attn.qkv.bias")  # noqa: E731


def views(step: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + step)
    return [torch.randn(BATCH, 3, s, s, generator=g) for s in (32, 32, 16, 16)]


def _ref_name(key: str) -> str:
    """suite ``student.backbone.model.X`` / ``student.head.layers.i`` -> MultiCropWrapper ``backbone.X`` /
    DINOHead ``head.mlp.i`` (the last layer keeps its name)."""
    key = key.replace("backbone.model.", "backbone.", 1)
    return key.replace("head.layers.", "head.mlp.", 1)


def _state(method) -> dict:
    state = {f"student.{_ref_name(k)}": v for k, v in method.student.state_dict().items()}
    state |= {f"teacher.{_ref_name(k)}": v for k, v in method.teacher.state_dict().items()}
    return state | {"center": method.criterion.center}


def _flags(cfg, data: Path, out: Path) -> list[str]:
    """The recipe as main_dino.py's flags (as the README's ViT-S/16 command passes them), at the harness's
    sizes; the LR as given (main_dino.py scales it by the batch itself)."""
    m, o, d, b = cfg.method, cfg.optim, cfg.data, cfg.backbone
    flags = {
        "arch": "vit_tiny",
        "patch_size": b.patch_size,
        "out_dim": m.out_dim,
        "norm_last_layer": m.norm_last_layer,
        "momentum_teacher": m.momentum_teacher,
        "use_bn_in_head": m.use_bn_in_head,
        "warmup_teacher_temp": m.warmup_teacher_temp,
        "teacher_temp": m.teacher_temp,
        "warmup_teacher_temp_epochs": int(m.warmup_teacher_temp_epochs),
        "use_fp16": False,
        "weight_decay": o.weight_decay,
        "weight_decay_end": o.weight_decay_end,
        "clip_grad": o.clip_grad,
        "batch_size_per_gpu": BATCH,
        "epochs": o.epochs,
        "freeze_last_layer": m.freeze_last_layer,
        "lr": o.lr,
        "warmup_epochs": int(o.warmup_epochs),
        "min_lr": o.min_lr,
        "optimizer": "adamw",
        "drop_path_rate": b.drop_path_rate,
        "global_crops_scale": list(d.global_scale),
        "local_crops_number": d.n_local,
        "local_crops_scale": list(d.local_scale),
        "data_path": data,
        "output_dir": out,
        "num_workers": 0,
    }
    return H.argv(flags)


def reference_run(cfg, init, tmp: Path):
    """main_dino.train_dino with the recipe's flags builds the student and teacher (MultiCropWrapper with
    DINOHead), DINOLoss, AdamW over get_params_groups and the three schedules; it is stopped where it calls
    train_one_epoch, which then runs from the suite's weights over the harness's views. Shims: vit_tiny's
    first ``backbone.depth`` blocks at ``backbone.img_size`` as its ``--arch``, DINOHead at the harness's
    hidden and bottleneck widths, the harness's 1-process group
    for its init_distributed_mode (which refuses a machine without a GPU), a DDP stand-in; its parser lists
    --arch choices from the torch hub, which this machine cannot reach."""
    o, b = cfg.optim, cfg.backbone
    main_dino, utils, vits = H.import_reference("dino", "main_dino", "utils", "vision_transformer")
    small_head = functools.partial(main_dino.DINOHead, hidden_dim=HIDDEN, bottleneck_dim=BOTTLENECK)
    vit_tiny = vits.vit_tiny

    def small_vit_tiny(**kwargs):
        vit = vit_tiny(img_size=[b.img_size], **kwargs)
        vit.blocks = torch.nn.ModuleList(list(vit.blocks)[: b.depth])
        return vit

    def one_process(args):
        args.rank, args.world_size, args.gpu = 0, 1, 0

    with mock.patch.object(torch.hub, "list", lambda *a, **k: []):
        args = main_dino.get_args_parser().parse_args(
            _flags(cfg, H.image_folder(tmp / "data", SPE * BATCH), tmp / "out")
        )
    (tmp / "out").mkdir()
    with contextlib.ExitStack() as stack:
        stack.enter_context(H.cpu_single_process())
        stack.enter_context(mock.patch.object(vits, "vit_tiny", small_vit_tiny))
        stack.enter_context(mock.patch.object(main_dino, "DINOHead", small_head))
        stack.enter_context(mock.patch.object(utils, "init_distributed_mode", one_process))
        ddp = mock.patch.object(torch.nn.parallel, "DistributedDataParallel", lambda module, **k: H.DDPShim(module))
        stack.enter_context(ddp)
        stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        setup = H.setup_of(lambda: main_dino.train_dino(args), main_dino, "train_one_epoch")
    ddp_student, teacher, loss = setup["student"], setup["teacher_without_ddp"], setup["dino_loss"]
    optimizer, lr_s, wd_s, mom_s = (setup[k] for k in ("optimizer", "lr_schedule", "wd_schedule", "momentum_schedule"))
    student = ddp_student.module
    assert setup["teacher"] is teacher and setup["fp16_scaler"] is None
    for part, net in (("student", student), ("teacher", teacher)):
        H.load_mapped(net, {k[len(part) + 1 :]: v for k, v in init.items() if k.startswith(part + ".")}, _ref_name)

    records: list[H.StepRecord] = []
    seen: list[float] = []

    class Recorder(torch.nn.Module):  # the reference loss, its value kept for the comparison
        def forward(self, s, t, epoch):
            out = loss(s, t, epoch)
            seen.append(out.item())
            return out

    def record(it: int, epoch: int) -> None:
        g = optimizer.param_groups[0]
        vals = {
            "lr": g["lr"],
            "wd": g["weight_decay"],
            "wd_min": H.min_weight_decay(optimizer),
            "momentum": float(mom_s[it]),
            "teacher_temp": float(loss.teacher_temp_schedule[epoch]),
        }
        state = {f"student.{k}": v for k, v in student.state_dict().items()}
        state |= {f"teacher.{k}": v for k, v in teacher.state_dict().items()}
        state["center"] = loss.center
        records.append(H.StepRecord(seen[-1], vals, H.snapshot(state)))

    class Loader:  # the same views; the state after each reference step is read before the next batch
        def __init__(self, epoch):
            self.epoch = epoch

        def __len__(self):
            return SPE

        def __iter__(self):
            for i in range(SPE):
                it = self.epoch * SPE + i
                if i:
                    record(it - 1, self.epoch)
                yield views(it), None
            record(self.epoch * SPE + SPE - 1, self.epoch)

    # shim: MetricLogger.synchronize_between_processes (logging only) builds a CUDA tensor in a process group
    no_log_sync = mock.patch.object(utils, "is_dist_avail_and_initialized", lambda: False)
    with H.cpu_single_process(), no_log_sync, contextlib.redirect_stdout(io.StringIO()):
        for epoch in range(o.epochs):
            main_dino.train_one_epoch(
                ddp_student,
                teacher,
                teacher,
                Recorder(),
                Loader(epoch),
                optimizer,
                lr_s,
                wd_s,
                mom_s,
                epoch,
                None,
                args,
            )
    return records


def run() -> H.Comparison:
    ours = H.suite_steps(OVERRIDES, views, EPOCHS * SPE, SPE, _state)
    with tempfile.TemporaryDirectory(prefix="ssl-bench-parity-dino-") as tmp:
        theirs = reference_run(ours.cfg, ours.init, Path(tmp))
    return H.compare("dino", ours.records, theirs, LOSS_TOL, PARAM_TOL, apart=APART, apart_tol=APART_TOL)


@pytest.mark.skipif(H.skip_reason("dino") is not None, reason=str(H.skip_reason("dino")))
def test_dino_paper_step_equals_the_reference():
    c = run()
    print(c.line())
    assert not c.first_difference, c.line()
    assert np.isfinite(c.max_param)
