"""The optimizer and schedule built from the real `optim` / `scheduler` configs (minillm.training.optim)."""

from __future__ import annotations

import math

import pytest
import torch

from minillm.training.optim import is_constant, make_optimizer, make_scheduler


def _model():
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))


def test_adamw_decays_matrices_only_with_the_configured_values(compose):
    cfg = compose(["objective=sft", "optim.lr=0.01", "optim.weight_decay=0.3"])
    model = _model()
    model[1].weight.requires_grad_(False)  # frozen parameters stay out of the optimizer
    opt = make_optimizer(model.parameters(), cfg.optim)
    assert isinstance(opt, torch.optim.AdamW)
    decay, no_decay = opt.param_groups
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 3])] and decay["weight_decay"] == 0.3
    assert [p.shape for p in no_decay["params"]] == [torch.Size([4]), torch.Size([4])]
    assert no_decay["weight_decay"] == 0.0
    assert opt.defaults["lr"] == 0.01 and opt.defaults["betas"] == (0.9, 0.95)


def test_the_objective_states_its_own_lr_and_warm_up_and_an_override_wins(compose):
    cfg = compose(["objective=reverse_kld"])
    assert cfg.optim.lr == 3.0e-5 and cfg.scheduler.num_warmup_steps == 20
    assert cfg.select.monitor == "val/rougeL" and cfg.trainer.val_check_interval == 10
    cfg = compose(["objective=reverse_kld", "optim.lr=1e-4", "select.monitor=val/loss"])
    assert cfg.optim.lr == 1.0e-4 and cfg.select.monitor == "val/loss"
    cfg = compose(["objective=sft"])
    assert (
        cfg.optim.lr == 1.0e-3 and cfg.scheduler.num_warmup_steps == 50 and cfg.select.monitor == "val/loss"
    )


def _lrs(cfg, total: int, steps: int) -> list[float]:
    opt = make_optimizer(_model().parameters(), cfg.optim)
    sched = make_scheduler(opt, cfg.scheduler, total)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_cosine_schedule_warms_up_from_zero_then_decays_to_the_floor(compose):
    cfg = compose(
        ["objective=sft", "optim.lr=1.0", "scheduler.num_warmup_steps=4", "scheduler.min_lr_rate=0.1"]
    )
    lrs = _lrs(cfg, total=14, steps=16)
    assert lrs[:5] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    # after warm-up: 0.1 + 0.9 * (1 + cos(pi * (s - 4) / 10)) / 2
    for s in range(4, 15):
        assert lrs[s] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (s - 4) / 10)))
    assert not is_constant(cfg.scheduler)


def test_constant_schedule_takes_no_step_count(compose):
    cfg = compose(["objective=sft", "scheduler=constant", "optim.lr=2.0", "scheduler.num_warmup_steps=2"])
    assert _lrs(cfg, total=5, steps=6) == pytest.approx([0.0, 1.0, 2.0, 2.0, 2.0, 2.0])
    assert is_constant(cfg.scheduler)


def test_the_strategy_group_instantiates_a_lightning_strategy(compose):
    from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy

    from minillm.training.trainer import make_trainer

    trainer, checkpoint = make_trainer(compose(["objective=sft"]), [])
    assert isinstance(trainer.strategy, SingleDeviceStrategy)  # trainer.strategy=auto, one CPU device
    assert checkpoint.monitor == "val/loss" and checkpoint is trainer.checkpoint_callback
    trainer, _ = make_trainer(compose(["objective=sft", "strategy=ddp"]), [])
    assert isinstance(trainer.strategy, DDPStrategy)


def test_another_optimizer_takes_its_own_keys_and_a_key_it_does_not_take_is_one_line(compose):
    """The README's swap: optim._target_=torch.optim.SGD with its own momentum (AdamW's betas removed). The
    key check lets optim's keys through (they are the target's arguments); a leftover one is named when
    the optimizer is built, in one line."""
    from minillm.config import validate_config
    from minillm.errors import MinillmError

    cfg = compose(["optim._target_=torch.optim.SGD", "~optim.betas", "+optim.momentum=0.9"])
    validate_config(cfg)
    opt = make_optimizer(_model().parameters(), cfg.optim)
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == 0.9
    cfg = compose(["optim._target_=torch.optim.SGD"])
    with pytest.raises(
        MinillmError,
        match=r"^optim: SGD cannot be called with \(list, lr=…, betas=…\): got an unexpected keyword argument 'betas' \(remove",
    ):
        make_optimizer(_model().parameters(), cfg.optim)
    cfg = compose(["+scheduler.bogus=1"])
    validate_config(cfg)
    with pytest.raises(
        MinillmError,
        match=r"^scheduler: \S+ cannot be called with \(SGD, .*bogus=….*\): got an unexpected keyword argument 'bogus' \(remove",
    ):
        make_scheduler(torch.optim.SGD(_model().parameters(), lr=0.1), cfg.scheduler, 10)


def test_a_callback_of_ones_own_is_one_override(compose):
    """The README's `+callbacks.lr._target_=…LearningRateMonitor` adds a callback; a wrong argument is one line."""
    from lightning.pytorch.callbacks import LearningRateMonitor

    from minillm.config import validate_config
    from minillm.errors import MinillmError
    from minillm.training.trainer import make_trainer

    cfg = compose(["+callbacks.lr._target_=lightning.pytorch.callbacks.LearningRateMonitor", "logger=csv"])
    validate_config(cfg)
    trainer, _ = make_trainer(cfg, [])
    assert any(isinstance(c, LearningRateMonitor) for c in trainer.callbacks)
    cfg = compose(
        ["+callbacks.lr._target_=lightning.pytorch.callbacks.LearningRateMonitor", "+callbacks.lr.x=1"]
    )
    with pytest.raises(
        MinillmError, match=r"^callbacks\.lr: cannot build 'lightning\.pytorch\.callbacks\.Learn"
    ):
        make_trainer(cfg, [])
