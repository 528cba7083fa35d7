import pytest
import yaml

from ssl_bench.config import build_config, load_config, to_yaml
from ssl_bench.errors import ConfigError, UserError


def test_defaults_then_preset_then_cli():
    assert build_config(["method=simclr"]).backbone.depth == 4  # from configs/default.yaml
    cfg = build_config(["method=dino"])
    assert cfg.preset == "default" and cfg.dataset == "digits"
    assert (cfg.backbone.depth, cfg.backbone.patch_size) == (2, 8)  # DINO's demo recipe, over the shared preset
    assert cfg.method.out_dim == 1024 and cfg.method.use_bn_in_head  # DINO's own settings for this preset
    cfg = build_config(["method=dino", "backbone.depth=2", "method.out_dim=256", "optim.lr=0.01"])
    assert (cfg.backbone.depth, cfg.method.out_dim, cfg.optim.lr) == (2, 256, 0.01)


def test_unknown_key_names_nearest():
    with pytest.raises(ConfigError, match=r"unknown config key 'optim.lrr'.*'optim.lr'"):
        build_config(["optim.lrr=1"])
    with pytest.raises(ConfigError, match=r"method.centering"):
        build_config(["method.centring=false"])


def test_wrong_type_names_key():
    with pytest.raises(ConfigError, match=r"'optim.epochs'"):
        build_config(["optim.epochs=many"])


def test_choice_and_range_errors_name_valid_values():
    with pytest.raises(ConfigError, match=r"'precision'.*fp32, bf16, fp16"):
        build_config(["precision=fp8"])
    with pytest.raises(ConfigError, match=r"method.center_momentum"):
        build_config(["method.center_momentum=1.5"])


def test_unknown_selectors_list_valid_names():
    with pytest.raises(UserError, match=r"unknown method 'dnio'.*did you mean 'dino'"):
        build_config(["method=dnio"])
    with pytest.raises(UserError, match=r"unknown dataset 'cifar11'.*cifar10"):
        build_config(["dataset=cifar11"])
    with pytest.raises(ConfigError, match=r"unknown preset"):
        build_config(["preset=nope"])
    with pytest.raises(ConfigError, match=r"expected key=value"):
        build_config(["method"])


def test_the_digits_demo_recipe_is_not_given_silently_to_other_data(capsys):
    """Without preset=, only digits trains with the demo's recipe; other data names its preset."""
    from ssl_bench.__main__ import main

    for data in ("dataset=imagefolder", "dataset=cifar10"):
        with pytest.raises(ConfigError, match=rf"^{data} needs a preset .*valid: cifar10, cifar10-cpu, default, paper"):
            build_config(["method=simclr", data])
        assert main(["run", "method=simclr", data, "data.root=/nowhere"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {data} needs a preset") and err.count("\n") == 1
    assert build_config(["preset=default", "dataset=imagefolder"]).preset == "default"  # on purpose
    assert build_config(["preset=cifar10"]).dataset == "cifar10"
    assert build_config(["dataset=digits"]).preset == "default"


def test_preset_backbone_settings_only_apply_to_that_backbone():
    cfg = build_config(["backbone=resnet18"])  # default preset configures vit_tiny's depth
    assert cfg.backbone.name == "resnet18" and not hasattr(cfg.backbone, "depth")


def test_saved_config_round_trips(tmp_path):
    cfg = build_config(["method=dino", "method.centering=false", "data.n_local=2", "seed=3"])
    p = tmp_path / "config.yaml"
    p.write_text(to_yaml(cfg))
    assert yaml.safe_load(p.read_text())["method"]["centering"] is False
    assert load_config(p) == cfg


def test_every_command_has_its_own_help(capsys):
    """`COMMAND --help` says what the command takes; config commands list the keys of the chosen method."""
    from ssl_bench.__main__ import COMMANDS, main

    for command in COMMANDS:
        assert main([command, "--help"]) == 0
        assert capsys.readouterr().out.startswith(f"python -m ssl_bench {command}: ")
    assert main(["run", "method=simclr", "--help"]) == 0
    out = capsys.readouterr().out
    assert "temperature" in out and "teacher_temp" not in out and "optim." in out and "lars_eta" in out
    assert main(["run", "method=dino", "-h"]) == 0
    assert "teacher_temp" in capsys.readouterr().out
    assert main(["report", "--help"]) == 0 and "by=" in capsys.readouterr().out


def test_only_rank_zero_logs_below_warning(monkeypatch):
    """Under torchrun (RANK) or srun (SLURM_PROCID) a rank other than 0 keeps its warnings, not its info."""
    import logging

    from ssl_bench.cli import MainRankOnly

    keep = MainRankOnly().filter
    info = logging.LogRecord("ssl_bench", logging.INFO, __file__, 1, "epoch 1/2", None, None)
    warn = logging.LogRecord("ssl_bench", logging.WARNING, __file__, 1, "loss is NaN", None, None)
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("SLURM_PROCID", raising=False)
    assert keep(info) and keep(warn)
    for key in ("RANK", "SLURM_PROCID"):
        monkeypatch.setenv(key, "3")
        assert not keep(info) and keep(warn)
        monkeypatch.setenv(key, "0")
        assert keep(info)
        monkeypatch.delenv(key)
