"""Optional trackers beside ``train.jsonl``, written by the main process only: TensorBoard
(``log.tensorboard=true``: scalars per step every ``log.every_steps`` steps and per epoch under
``<run_dir>/tensorboard``, and at the end the run's settings as hparams with its final metrics) and Weights &
Biases (``log.wandb=true``: the same scalars, the resolved config and the final metrics as the run's summary,
under ``<run_dir>/wandb``; ``log.wandb_offline=true`` writes the run for a later ``wandb sync``, as
solo-learn's ``wandb.offline``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ssl_bench.errors import UserError

log = logging.getLogger(__name__)


def _scalar(v: Any) -> float:
    return float(v.detach()) if hasattr(v, "detach") else float(v)


class Tracker:
    def __init__(
        self,
        run_dir: Path,
        enabled: bool,
        every_steps: int,
        wandb: bool = False,
        config: dict | None = None,
        project: str = "ssl-bench",
        offline: bool = False,
    ) -> None:
        self.writer, self.every, self.wandb = None, every_steps, None
        self.config = {k: v for k, v in (config or {}).items()}
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise UserError(
                    "log.tensorboard=true needs the tensorboard package: pip install 'ssl-bench[tensorboard]'"
                ) from None
            self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"))
        if wandb:
            try:
                import wandb as wb
            except ImportError:
                raise UserError("log.wandb=true needs the wandb package: pip install 'ssl-bench[wandb]'") from None
            run_dir = Path(run_dir)
            self.wandb = wb.init(
                project=project,
                name=run_dir.name,
                id=run_dir.name.replace(".", "-")[-64:],
                resume="allow",  # a resumed run continues its W&B run
                dir=str(run_dir),
                config=self.config,
                mode="offline" if offline else "online",
                settings=wb.Settings(console="off", silent=True),
            )

    def step(self, step: int, out: dict, lr: float, wd: float, values: dict) -> None:
        """Scalars of one step (``step`` counts from 1); only every ``every`` steps, to bound host syncs."""
        if (self.writer is None and self.wandb is None) or step % self.every:
            return
        scalars = {f"step/{k}": _scalar(v) for k, v in out.items()}
        scalars |= {"step/lr": lr, "step/wd": wd, **{f"step/{k}": float(v) for k, v in values.items()}}
        if self.writer is not None:
            for k, v in scalars.items():
                self.writer.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)

    def epoch(self, record: dict) -> None:
        scalars = {
            f"epoch/{k}": v for k, v in record.items() if k not in ("epoch", "step") and isinstance(v, (int, float))
        }
        if self.writer is not None:
            for k, v in scalars.items():
                self.writer.add_scalar(k, v, record["epoch"])
            self.writer.flush()
        if self.wandb is not None:
            self.wandb.log({**scalars, "epoch": record["epoch"]}, step=record.get("step"))

    def finish(self, rows: list[dict]) -> None:
        """The run's final metrics (``metrics.json`` rows): TensorBoard hparams (the run's settings beside
        them, so runs compare in the HPARAMS tab) and the W&B run's summary."""
        metrics = {f"{r['eval']}/{r['metric']}": float(r["value"]) for r in rows if _is_number(r.get("value"))}
        if self.writer is not None and metrics:
            hparams = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in self.config.items()}
            self.writer.add_hparams(hparams, {f"final/{k}": v for k, v in metrics.items()}, run_name=".")
        if self.wandb is not None:
            self.wandb.summary.update(metrics)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v
