"""The training engine: setup, the step, the loop, evaluation, checkpoints, weights in and out.
Importing it loads the plug-ins (methods, backbones, datasets, evaluations), so library code that trains
finds every registered name."""

from ssl_bench import plugins

plugins.load_all()
