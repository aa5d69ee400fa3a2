"""Every registered task kind trains through the one batch step: in bf16 its networks run
under autocast (the kind's own forward passes see it enabled), and its configuration carries
no scratch entries of the loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from search_spaces import registry
from trainables.loop import KINDS, FitSettings, Kind, StepContext, fit, get_kind

get_kind("classify")  # imports every module of trainables: all kinds are registered now
KIND_NAMES = sorted(KINDS)


def space_of(kind: str):
    return next(s for s in registry().values() if s.kind == kind)


def test_every_kind_subclasses_the_base_and_has_a_space():
    assert {"classify", "autoencode", "gan", "ewm", "met", "gbdt"} <= set(KIND_NAMES)
    for name in KIND_NAMES:
        assert isinstance(KINDS[name], Kind)
        space_of(name)  # StopIteration: a kind no space uses


@pytest.mark.parametrize("name", KIND_NAMES)
def test_one_bf16_epoch_runs_the_networks_under_autocast(name, tiny_data):
    kind = get_kind(name)
    space = space_of(name)
    data = tiny_data(space.dataset)
    config = dict(space.seed_config)
    if "batch_size" in config:
        config["batch_size"] = 16
    if "mem_size" in config:
        config["mem_size"] = 4
    model = space.build(config, data.info)
    seen: list[tuple[bool, torch.dtype]] = []

    def record(module, args):
        if torch.is_grad_enabled():  # training passes only (evaluation runs in fp32)
            seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))

    for module in model.modules():
        module.register_forward_pre_hook(record)
    ctx = StepContext.create("cpu", "bf16")
    opt = kind.make_optimizer(model, config)
    before = dict(config)
    metrics = kind.train_epoch(model, data, opt, config, np.random.default_rng(0), ctx)
    assert metrics and all(np.isfinite(v) for v in metrics.values())
    assert config == before, "the loop's state belongs in the StepContext, not the config"
    if not kind.mixed_precision:  # boosted trees: no network trained by gradient
        return
    assert seen, f"kind {name!r} ran no training forward pass"
    assert any(enabled and dtype == torch.bfloat16 for enabled, dtype in seen), \
        f"kind {name!r} trained without autocast"


def test_fit_returns_the_trained_model_and_keeps_the_config_clean(tiny_data):
    space = registry()["resnet1d"]
    data = tiny_data(space.dataset)
    config = dict(space.seed_config, batch_size=16)
    before = dict(config)
    fitted = fit(space, config, data, FitSettings(max_epochs=1, precision="bf16", figure_every=1))
    assert fitted["epoch"] == 1 and "val_top1" in fitted
    assert isinstance(fitted.model, torch.nn.Module)
    assert config == before
    x = torch.from_numpy(data.batch("x", np.sort(data.val[:2]), config))
    assert fitted.model.eval()(x).shape == (2, data.info.num_classes)


@pytest.mark.parametrize("check_each_step", [True, False])
def test_a_nan_loss_ends_the_epoch_whether_checked_per_step_or_per_epoch(tiny_data,
                                                                          check_each_step):
    """On the CPU each step's loss is tested at once; on an accelerator (``check_each_step``
    False, so that no step waits for the device) the epoch's summed loss is tested at its end.
    Either way a NaN loss ends the trial as diverged, and the statistics kept as tensors
    average to the same epoch metrics as per-step floats."""
    from trainables.loop import ClassifyKind, TrialDiverged

    space = registry()["resnet1d"]
    data = tiny_data(space.dataset)
    config = dict(space.seed_config, batch_size=8)
    steps: list[int] = []

    class PoisonedKind(ClassifyKind):
        def batch_loss(self, model, data, idx, cfg, rng, ctx):
            loss, stats = super().batch_loss(model, data, idx, cfg, rng, ctx)
            steps.append(len(idx))
            return (loss * float("nan") if len(steps) == 2 else loss), stats

    kind = PoisonedKind()
    model = space.build(config, data.info)
    ctx = StepContext.create("cpu")
    ctx.check_each_step = check_each_step
    with pytest.raises(TrialDiverged, match="training loss became nan"):
        kind.train_epoch(model, data, kind.make_optimizer(model, config), config,
                         np.random.default_rng(0), ctx)
    batches = sum(min(8, len(data.train) - s) >= 2 for s in range(0, len(data.train), 8))
    assert len(steps) == (2 if check_each_step else batches), steps

    # tensor statistics (summed on the device) give the epoch means floats would
    ctx = StepContext.create("cpu")
    ctx.check_each_step = check_each_step
    torch.manual_seed(0)
    model = space.build(config, data.info)
    floats: list[tuple[int, dict[str, float]]] = []

    class RecordingKind(ClassifyKind):
        def batch_loss(self, model, data, idx, cfg, rng, ctx):
            loss, stats = super().batch_loss(model, data, idx, cfg, rng, ctx)
            floats.append((len(idx), {k: float(v) for k, v in stats.items()}))
            return loss, stats

    kind = RecordingKind()
    metrics = kind.train_epoch(model, data, kind.make_optimizer(model, config), config,
                               np.random.default_rng(0), ctx)
    seen = sum(n for n, _ in floats)
    for key in ("train_loss", "train_top1"):
        expected = sum(n * stats[key] for n, stats in floats) / seen
        assert metrics[key] == pytest.approx(expected, rel=1e-5)
        assert isinstance(metrics[key], float)
