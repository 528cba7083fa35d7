"""The peer loop: each method written the way lightly's documentation shows it (lightly's transform,
heads and loss, ``update_momentum``, AdamW, a DataLoader of the transform, one forward per crop), on the
suite's backbone with the same config."""

from __future__ import annotations

import copy

import torch
from bench import MEAN, METHODS, STD, ImageList, endless  # noqa: E402  (benchmarks/ is on sys.path)


def lightly_transform(cfg):
    from lightly import transforms as LT

    d, name = cfg.data, cfg.method.name
    blur = 0.5 if d.blur else 0.0
    norm = {"mean": list(MEAN), "std": list(STD)}
    if name in ("dino",):
        return LT.DINOTransform(
            global_crop_size=d.global_size,
            global_crop_scale=tuple(d.global_scale),
            local_crop_size=d.local_size,
            local_crop_scale=tuple(d.local_scale),
            n_local_views=d.n_local,
            gaussian_blur=(1.0, 0.1, 0.5) if d.blur else (0.0, 0.0, 0.0),
            solarization_prob=0.2 if d.solarize else 0.0,
            normalize=norm,
        )
    if name == "swav":
        return LT.SwaVTransform(
            crop_sizes=(d.global_size, d.local_size),
            crop_counts=(2, d.n_local),
            crop_min_scales=(d.global_scale[0], d.local_scale[0]),
            crop_max_scales=(d.global_scale[1], d.local_scale[1]),
            gaussian_blur=blur,
            normalize=norm,
        )
    if name == "byol":
        v1 = LT.BYOLView1Transform(
            input_size=d.global_size, min_scale=d.global_scale[0], gaussian_blur=1.0 if d.blur else 0.0, normalize=norm
        )
        v2 = LT.BYOLView2Transform(
            input_size=d.global_size,
            min_scale=d.global_scale[0],
            gaussian_blur=0.1 if d.blur else 0.0,
            solarization_prob=0.2 if d.solarize else 0.0,
            normalize=norm,
        )
        return LT.BYOLTransform(view_1_transform=v1, view_2_transform=v2)
    if name == "moco":
        return LT.MoCoV2Transform(
            input_size=d.global_size, min_scale=d.global_scale[0], gaussian_blur=blur, normalize=norm
        )
    return LT.SimCLRTransform(input_size=d.global_size, min_scale=d.global_scale[0], gaussian_blur=blur, normalize=norm)


class Peer:
    def __init__(self, cfg, images):
        from lightly import loss as LL
        from lightly.models import modules as LM
        from lightly.models.utils import deactivate_requires_grad

        from ssl_bench.backbones import build_backbone

        torch.manual_seed(cfg.seed)
        self.cfg, m = cfg, cfg.method
        self.dev = torch.device("cuda" if torch.cuda.is_available() and cfg.device != "cpu" else "cpu")
        self.bf16 = cfg.precision == "bf16"
        bb = build_backbone(cfg.backbone)
        dim = bb.embed_dim
        name = m.name
        self.name = name
        nn = torch.nn
        if name == "dino":
            self.student = nn.Sequential(
                bb,
                LM.DINOProjectionHead(
                    dim, m.hidden_dim, m.bottleneck_dim, m.out_dim, batch_norm=m.use_bn_in_head, freeze_last_layer=1
                ),
            )
            self.teacher = nn.Sequential(
                copy.deepcopy(bb),
                LM.DINOProjectionHead(dim, m.hidden_dim, m.bottleneck_dim, m.out_dim, batch_norm=m.use_bn_in_head),
            )
            self.teacher.load_state_dict(self.student.state_dict())
            self.criterion = LL.DINOLoss(
                output_dim=m.out_dim,
                teacher_temp=m.teacher_temp,
                student_temp=m.student_temp,
                center_momentum=m.center_momentum,
            )
            online, self.pairs = self.student, [(self.student, self.teacher)]
        elif name == "simclr":
            online = nn.Sequential(bb, LM.SimCLRProjectionHead(dim, m.hidden_dim, m.out_dim))
            self.criterion, self.pairs = LL.NTXentLoss(temperature=m.temperature), []
        elif name == "byol":
            self.backbone_proj = nn.Sequential(bb, LM.BYOLProjectionHead(dim, m.hidden_dim, m.out_dim))
            self.predictor = LM.BYOLPredictionHead(m.out_dim, m.hidden_dim, m.out_dim)
            self.target = copy.deepcopy(self.backbone_proj)
            online = nn.ModuleList([self.backbone_proj, self.predictor])
            self.criterion, self.pairs = LL.NegativeCosineSimilarity(), [(self.backbone_proj, self.target)]
        elif name == "moco":
            if m.version != 2:
                raise SystemExit("the peer loop covers MoCo v2 (lightly's documented MoCo example)")
            hidden, out = m.hidden_dim or 2048, m.out_dim or 128
            online = nn.Sequential(bb, LM.MoCoProjectionHead(dim, hidden, out))
            self.key = copy.deepcopy(online)
            self.criterion = LL.NTXentLoss(temperature=m.temperature, memory_bank_size=(m.queue_size, out))
            self.pairs = [(online, self.key)]
        elif name == "swav":
            self.proj = nn.Sequential(bb, LM.SwaVProjectionHead(dim, m.hidden_dim, m.out_dim))
            self.prototypes = LM.SwaVPrototypes(m.out_dim, m.n_prototypes, n_steps_frozen_prototypes=0)
            online = nn.ModuleList([self.proj, self.prototypes])
            self.criterion, self.pairs = (
                LL.SwaVLoss(
                    temperature=m.temperature,
                    sinkhorn_iterations=m.sinkhorn_iterations,
                    sinkhorn_epsilon=m.sinkhorn_epsilon,
                ),
                [],
            )
        else:
            raise SystemExit(f"no peer loop for method {name!r}; peers exist for {', '.join(METHODS)}")
        self.online = online.to(self.dev)
        self.criterion.to(self.dev)  # lightly's DINOLoss center and memory banks are buffers
        for _, t in self.pairs:
            t.to(self.dev)
            deactivate_requires_grad(t)
        self.online.train()
        lr = cfg.optim.lr * cfg.optim.batch_size / 256.0
        self.opt = torch.optim.AdamW(self.online.parameters(), lr=lr, weight_decay=cfg.optim.weight_decay)
        ds = ImageList(images, lightly_transform(cfg))
        self.epoch = -1

        def next_loader():
            self.epoch += 1
            return torch.utils.data.DataLoader(
                ds, batch_size=cfg.optim.batch_size, shuffle=True, drop_last=True, num_workers=cfg.data.num_workers
            )

        self.batches = endless(next_loader)

    def _forward(self, views):
        from lightly.models.utils import update_momentum

        for online, target in self.pairs:
            update_momentum(online, target, m=0.99)
        c = self.criterion
        if self.name == "dino":
            teacher_out = [self.teacher(v) for v in views[:2]]
            student_out = [self.student(v) for v in views]
            return c(teacher_out, student_out, epoch=self.epoch)
        if self.name == "simclr":
            return c(self.online(views[0]), self.online(views[1]))
        if self.name == "byol":
            p0, p1 = self.predictor(self.backbone_proj(views[0])), self.predictor(self.backbone_proj(views[1]))
            with torch.no_grad():
                z0, z1 = self.target(views[0]), self.target(views[1])
            return 0.5 * (c(p0, z1) + c(p1, z0))
        if self.name == "moco":  # symmetric, as the suite's MoCo v2
            q0, q1 = self.online(views[0]), self.online(views[1])
            with torch.no_grad():
                k0, k1 = self.key(views[0]), self.key(views[1])
            return 0.5 * (c(q0, k1) + c(q1, k0))
        self.prototypes.normalize()
        feats = [torch.nn.functional.normalize(self.proj(v), dim=1) for v in views]
        scores = [self.prototypes(f, self.epoch) for f in feats]
        return c(scores[:2], scores[2:])

    def run(self, n: int) -> None:
        for _ in range(n):
            views, _ = next(self.batches)
            views = [v.to(self.dev, non_blocking=True) for v in views]
            with torch.autocast(self.dev.type, dtype=torch.bfloat16, enabled=self.bf16):
                loss = self._forward(views)
            loss.backward()
            if self.name == "dino":
                self.student[1].cancel_last_layer_gradients(current_epoch=self.epoch)
            self.opt.step()
            self.opt.zero_grad()
        if n:
            loss.detach().item()
