"""Optional TensorBoard scalars (``log.tensorboard=true``): per step every ``log.every_steps`` steps
and per epoch, written by the main process under ``<run_dir>/tensorboard``."""

from __future__ import annotations

import logging
from pathlib import Path

from ssl_bench.errors import UserError

log = logging.getLogger(__name__)


class Tracker:
    def __init__(self, run_dir: Path, enabled: bool, every_steps: int) -> None:
        self.writer, self.every = None, every_steps
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError(
                "log.tensorboard=true needs the tensorboard package: pip install 'ssl-bench[tensorboard]'"
            ) from None
        self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"))

    def step(self, step: int, out: dict, lr: float, wd: float, values: dict) -> None:
        """Scalars of one step (``step`` counts from 1); only every ``every`` steps, to bound host syncs."""
        if self.writer is None or step % self.every:
            return
        for k, v in out.items():
            self.writer.add_scalar(f"step/{k}", float(v.detach()) if hasattr(v, "detach") else float(v), step)
        self.writer.add_scalar("step/lr", lr, step)
        self.writer.add_scalar("step/wd", wd, step)
        for k, v in values.items():
            self.writer.add_scalar(f"step/{k}", float(v), step)

    def epoch(self, record: dict) -> None:
        if self.writer is None:
            return
        for k, v in record.items():
            if k not in ("epoch", "step") and isinstance(v, (int, float)):
                self.writer.add_scalar(f"epoch/{k}", v, record["epoch"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
