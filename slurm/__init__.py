"""Launch runs and sweeps on SLURM through submitit (and DDP on one machine)."""
