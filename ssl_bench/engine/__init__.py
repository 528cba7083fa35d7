"""The training engine: loop, schedules, checkpoints, distributed helpers."""
