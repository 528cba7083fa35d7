"""Stop a diverging run at the step it diverges, with one line naming the step and the last good
checkpoint, instead of at the end of the epoch (or never, for weights that explode but stay finite)."""

from __future__ import annotations

from pathlib import Path

import torch

from ssl_bench import dist as D
from ssl_bench.errors import UserError


class DivergenceGuard:
    """Checks the step's loss (non-finite) and the largest parameter norm (``optim.max_param_norm``,
    0 disables). On the CPU every step (reading a CPU tensor costs nothing); on a GPU every
    ``gpu_every`` steps, the only host sync it adds. Every process sees the same verdict (one all-reduce)."""

    def __init__(
        self,
        params: list[torch.Tensor],
        max_param_norm: float,
        device: torch.device,
        checkpoint: Path,
        bf16: bool,
        gpu_every: int = 25,
    ) -> None:
        self.params, self.limit, self.checkpoint, self.bf16 = params, max_param_norm, checkpoint, bf16
        self.every = 1 if device.type == "cpu" else gpu_every
        self.last_saved: tuple[int, int] | None = None  # (epoch, step) of the last checkpoint this run wrote

    def saved(self, epoch: int, step: int) -> None:
        self.last_saved = (epoch, step)

    @torch.no_grad()
    def check(self, loss: torch.Tensor, step: int, epoch: int, end_of_epoch: bool = False) -> None:
        """Check at every ``every``-th step; ``end_of_epoch``: the epoch's last step, checked here only
        when its regular check did not already run (off the cadence)."""
        on_cadence = step % self.every == 0
        if on_cadence == end_of_epoch:
            return
        norm = loss.new_zeros(())
        if self.limit > 0 and self.params:
            norm = torch.stack(torch._foreach_norm(self.params)).max().float()
        bad = (~torch.isfinite(loss.detach().float())).any().float()  # any shape: lightly's SwAV loss is (1,)
        state = torch.stack([bad, norm.to(bad.device)])
        state = D.all_reduce_mean(state)
        bad_loss, top = bool(state[0] > 0), float(state[1])
        if bad_loss or (self.limit > 0 and not top <= self.limit):
            what = (
                f"the loss is {loss.detach().float().sum().item():.4g}"
                if bad_loss
                else f"a parameter's norm reached {top:.3g} (optim.max_param_norm={self.limit:g})"
            )
            if self.last_saved:
                epoch_done, step_done = self.last_saved
                good = f"the last good checkpoint is {self.checkpoint} (epoch {epoch_done}, step {step_done})"
            else:
                good = "no checkpoint was written before it"
            advice = "lower optim.lr" + (" or use precision=fp32" if self.bf16 else "")
            raise UserError(f"training diverged at step {step} (epoch {epoch + 1}): {what}; {good}; {advice}")
