"""The seed 003 architecture, pinned by a parameter count derived from its layer description."""

from __future__ import annotations

import torch

from datasets.base import DataInfo
from search_spaces import get_space
from trainables.resnet1d import ModelOutput, ResnetClassifier, ResnetConfig


def conv(c_in: int, c_out: int, k: int) -> int:
    return c_in * c_out * k + c_out  # weights + bias


def bn(c: int) -> int:
    return 2 * c  # affine weight + bias


def seed_parameter_count(num_classes: int) -> int:
    """FIELD.md §003: stem CNN1dLayer(1→32, k13) → pool → 4 stages of 2 residual blocks
    (Layer k → LayerNoAct k, 1×1 conv downsample on the first block when the shape changes)
    with dims [32,64,64,64], kernels [5,7,17,13], strides [4,4,5,3] → Linear(64, classes)."""
    total = conv(1, 32, 13) + bn(32)
    prev = 32
    for dim, k, stride in zip([32, 64, 64, 64], [5, 7, 17, 13], [4, 4, 5, 3], strict=True):
        first = conv(prev, dim, k) + bn(dim) + conv(dim, dim, k) + bn(dim)
        if prev != dim or stride != 1:
            first += conv(prev, dim, 1)
        second = 2 * (conv(dim, dim, k) + bn(dim))
        total += first + second
        prev = dim
    return total + 64 * num_classes + num_classes


def test_seed_configuration_builds_the_seed_architecture():
    space = get_space("resnet1d")
    model = space.build(dict(space.seed_config), DataInfo((1, 2048), 14))
    assert sum(p.numel() for p in model.parameters()) == seed_parameter_count(14) == 627_950
    assert model.config == ResnetConfig(output_dim=14)  # the seed's defaults, nothing else


def test_feature_length_matches_the_strides():
    cfg = ResnetConfig(output_dim=7)
    model = ResnetClassifier(cfg).eval()
    for length in (2048, 3500, 8192):
        with torch.no_grad():
            features = model.resnet(torch.zeros(2, 1, length))
        assert features.shape == (2, 64, cfg.output_length(length))


def test_model_output_topk_accuracy():
    logits = torch.tensor([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5]])
    labels = torch.tensor([2, 0, 1])
    out = ModelOutput(logits)
    assert out.predictions.tolist() == [1, 0, 2]
    assert abs(out.accuracy(labels) - 1 / 3) < 1e-6
    assert out.top_k_preds(2).tolist() == [[1, 2], [0, 1], [2, 1]]
    assert abs(out.top_k_acc(labels, 2) - 1.0) < 1e-6
    assert abs(out.top_k_acc(labels, 1) - 1 / 3) < 1e-6


def test_output_with_labels_computes_cross_entropy():
    model = ResnetClassifier(ResnetConfig(output_dim=14)).eval()
    x, y = torch.rand(4, 1, 2048), torch.tensor([0, 3, 5, 13])
    out = model.output(x, y)
    assert out.loss is not None and torch.isfinite(out.loss)
    assert out.logits.shape == (4, 14)


def unseen_input_points(model: torch.nn.Module, length: int) -> int:
    """How many points of the feature maps along the network's main path fall between two
    windows of the layer that reads them (summed over layers; the few tail points a floor-mode
    window drops, as the seed's own pool does, are an edge, not a gap, and are not counted).

    The path is read from the built network: every Conv1d and MaxPool1d of the stem and of
    the residual blocks' hidden path, in order (the 1×1 shortcuts see a subset of the same).
    """
    unseen = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Conv1d | torch.nn.MaxPool1d) and "downsample" not in name:
            k, s, p = (int(v[0]) if isinstance(v, tuple) else int(v)
                       for v in (module.kernel_size, module.stride, module.padding))
            out = (length + 2 * p - k) // s + 1
            covered = {i for o in range(out) for i in range(o * s - p, o * s - p + k)
                       if 0 <= i < length}
            unseen += max(covered) - min(covered) + 1 - len(covered)
            length = out
    return unseen


def test_no_sampled_configuration_leaves_input_points_unseen():
    """A max-pool or strided conv whose stride exceeds its kernel skips the points between its
    windows: peaks there could never reach the classifier. No sampled stem/pool/stage may."""
    import optuna

    space = get_space("resnet1d")
    info = DataInfo(input_shape=(1, 2048), num_classes=14)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    skipped = []
    for _ in range(300):
        trial = study.ask()
        space.suggest(trial, info)
        study.tell(trial, 0.0)
        model = space.build(dict(trial.params), info)
        if unseen := unseen_input_points(model, 2048):
            skipped.append((unseen, {k: v for k, v in trial.params.items() if "pool" in k}))
    assert not skipped, f"{len(skipped)} of 300 configurations skip points: {skipped[:3]}"
    seed = space.build(dict(space.seed_config), info)
    assert unseen_input_points(seed, 2048) == 0
    # The check itself can fail: a pool stride beyond its kernel is caught.
    gappy = space.build(dict(space.seed_config, first_pool_kernel_size=3,
                             first_pool_stride=7), info)
    assert unseen_input_points(gappy, 2048) > 0
