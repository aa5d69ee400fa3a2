"""The one training loop every space uses.

``fit(space, config, data, ...)`` is a pure function of its arguments: it builds the model,
runs epochs, evaluates, reports metrics and a checkpoint state each epoch through a callback,
and returns the last metrics. Task kinds (classify, regress, ...) differ only in a
:class:`Kind`: how batches are drawn, one training epoch, one evaluation. Seeding, the
optimizer, resume from a state, the NaN/inf guard and reporting live here once.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from datasets.base import DataSplits

Metrics = dict[str, float]
#: ``report(metrics, state)``: an epoch's metrics and the state to checkpoint (None for an
#: earlier epoch reported again, which has no checkpoint of its own)
ReportFn = Callable[[Metrics, dict[str, Any] | None], None]


class TrialDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
FIGURES_KEY = "figures"  # checkpoint state entry: {name: PNG bytes}, written beside the state


@dataclass
class StepContext:
    """What a kind's steps need besides the model, data and configuration: the device, the
    precision (autocast, and the gradient scaler for fp16) and a scratch record that lives as
    long as one ``fit`` (a kind's last validation pass, for its figures; cached features).
    The configuration itself stays the searched parameters only."""

    device: torch.device
    precision: str = "fp32"
    scaler: Any = None  # torch.amp.GradScaler for fp16
    scratch: dict[str, Any] = field(default_factory=dict)
    #: test every step's loss for NaN/inf at once (CPU); False on an accelerator, where the
    #: test would make each step wait for the device: the epoch's loss sum is tested instead
    check_each_step: bool = True

    @classmethod
    def create(cls, device: str | torch.device, precision: str = "fp32") -> StepContext:
        """A context for ``device`` and ``precision`` (fp32, bf16, fp16)."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r} not in {sorted(PRECISIONS)}")
        device = torch.device(device)
        scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
        return cls(device=device, precision=precision, scaler=scaler,
                   check_each_step=device.type == "cpu")

    def autocast(self):
        """Mixed-precision context of this precision (a no-op for fp32)."""
        dtype = PRECISIONS[self.precision]
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def step(self, loss: torch.Tensor, opt: torch.optim.Optimizer) -> None:
        """Backward pass and optimizer step (through the gradient scaler for fp16)."""
        opt.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            opt.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(opt)
            self.scaler.update()


class Kind:
    """Step functions of one task kind; subclasses differ in how a batch becomes a loss.

    The default :meth:`train_epoch` draws shuffled batches of the train split and, for each,
    computes :meth:`batch_loss` under autocast and steps the optimizer through
    :meth:`StepContext.step` (gradient scaler for fp16): mixed precision lives here once.
    Kinds with several networks or phases (GAN, EWM) override :meth:`train_epoch` and use
    ``ctx.autocast()`` and ``ctx.step`` themselves. Hooks with defaults: :meth:`make_optimizer`,
    :meth:`figures`, :meth:`ready_for_inference`."""

    #: False for a kind that trains no network by gradient descent (boosted trees):
    #: precision does not apply to it
    mixed_precision: bool = True

    def make_optimizer(self, model: nn.Module, cfg: Mapping[str, Any]) -> Any:
        """The optimizer(s) of ``model``; one ``state_dict`` for the checkpoint."""
        return make_optimizer(model, cfg)

    def batch_loss(self, model: nn.Module, data: DataSplits, idx: np.ndarray,
                   cfg: Mapping[str, Any], rng: np.random.Generator, ctx: StepContext
                   ) -> tuple[torch.Tensor, Metrics]:
        """The training loss of batch ``idx`` and per-sample-averaged statistics to report
        (e.g. ``{"train_loss": ...}``); runs under autocast. A statistic may be a float or a
        detached 0-d tensor: tensors are summed on the device and read once per epoch, so a
        GPU step need not wait for the GPU (``.item()`` in every step would)."""
        raise NotImplementedError(f"{type(self).__name__} must define batch_loss or train_epoch")

    def train_epoch(self, model: nn.Module, data: DataSplits, opt: Any,
                    cfg: Mapping[str, Any], rng: np.random.Generator, ctx: StepContext
                    ) -> Metrics:
        """One pass over the train split; returns the epoch's training metrics.

        A non-finite loss ends the trial (:class:`TrialDiverged`): on the CPU at that step; on
        an accelerator at the end of the epoch, from the sum of the epoch's losses kept on the
        device, so that no step waits for the device to answer."""
        model.train()
        totals: dict[str, Any] = {}
        seen = 0
        per_step_check = ctx.check_each_step
        loss_sum: torch.Tensor | None = None
        for idx in iterate_minibatches(data.train, int(cfg["batch_size"]), rng):
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            with ctx.autocast():
                loss, stats = self.batch_loss(model, data, idx, cfg, rng, ctx)
            if per_step_check:
                if not torch.isfinite(loss):
                    raise TrialDiverged(f"training loss became {loss.item()}")
            else:
                detached = loss.detach().float()
                loss_sum = detached if loss_sum is None else loss_sum + detached
            ctx.step(loss, opt)
            for key, value in stats.items():
                totals[key] = totals.get(key, 0.0) + value * len(idx)
            seen += len(idx)
        if loss_sum is not None and not torch.isfinite(loss_sum):
            raise TrialDiverged(f"training loss became {loss_sum.item()} in this epoch")
        return {key: float(value) / max(seen, 1) for key, value in totals.items()}

    def evaluate(self, model: nn.Module, data: DataSplits, split: str,
                 cfg: Mapping[str, Any], ctx: StepContext) -> Metrics:
        """Metrics of ``split`` (``val``, ``test``), named ``<split>_<metric>``."""
        raise NotImplementedError(f"{type(self).__name__} must define evaluate")

    def figures(self, model: nn.Module, data: DataSplits, cfg: Mapping[str, Any],
                ctx: StepContext) -> dict[str, Any]:
        """Pictures of this epoch (name → PNG bytes, or a deferred picture of
        :func:`trainables.figures.later`, drawn by the driver), e.g. of the last validation pass."""
        return {}

    def ready_for_inference(self, model: nn.Module, data: DataSplits,
                            cfg: Mapping[str, Any]) -> None:
        """Make a model loaded from a checkpoint ready to predict (default: nothing)."""


KINDS: dict[str, Kind] = {}
_KINDS_LOADED = False


def register_kind(name: str, kind: Kind) -> Kind:
    """Make ``kind`` the step functions for spaces of task kind ``name``."""
    if not isinstance(kind, Kind):
        raise TypeError(f"kind {name!r}: {type(kind).__name__} must subclass trainables.loop.Kind")
    KINDS[name] = kind
    return kind


def get_kind(name: str) -> Kind:
    """The registered kind ``name``. Every module of :mod:`trainables` is imported first, so a
    kind defined in a new module is found without an edit here (as spaces are)."""
    global _KINDS_LOADED
    if not _KINDS_LOADED:
        import importlib
        import pkgutil

        import trainables

        for module in pkgutil.iter_modules(trainables.__path__):
            importlib.import_module(f"trainables.{module.name}")
        _KINDS_LOADED = True
    if name not in KINDS:
        raise ValueError(f"no step functions for kind {name!r} (registered: "
                         f"{', '.join(sorted(KINDS))})")
    return KINDS[name]


def iterate_minibatches(indices: np.ndarray, batch_size: int,
                        rng: np.random.Generator | None) -> Iterator[np.ndarray]:
    """Index batches over ``indices``: shuffled when ``rng`` is given, each batch sorted so
    reads from a memory map move forward through the file."""
    order = rng.permutation(indices) if rng is not None else indices
    for start in range(0, len(order), batch_size):
        yield np.sort(order[start : start + batch_size])


def to_device(block: np.ndarray, device: torch.device,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A numpy batch as a tensor on ``device`` (through pinned memory and a non-blocking copy
    when the device is a GPU)."""
    if not block.dtype.isnative:  # big-endian data: torch takes native byte order only
        block = block.astype(block.dtype.newbyteorder("="))
    tensor = torch.from_numpy(np.ascontiguousarray(block))
    if tensor.dtype != dtype:
        tensor = tensor.to(dtype)
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor


def gather(array: np.ndarray, idx: np.ndarray, device: torch.device,
           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Rows ``idx`` of a (memory-mapped) array as a tensor on ``device``."""
    return to_device(np.asarray(array[idx]), device, dtype)


def fetch(data: DataSplits, key: str, idx: np.ndarray, cfg: Mapping[str, Any],
          device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Rows ``idx`` of ``data.arrays[key]`` through the data set's transform, on ``device``."""
    return to_device(data.batch(key, idx, cfg), device, dtype)


def flip_image(xb: torch.Tensor, axis: str, channel_map: np.ndarray | None = None
               ) -> torch.Tensor:
    """Flip a (B, C, H, W) batch (``axis`` "horizontal": columns, "vertical": rows); with a
    ``channel_map`` (H, P) of gather indices, row ``r`` of the flipped image takes its channel
    ``g·P + k`` from channel ``g·P + map[r, k]`` (sensors inside a pixel mirrored with it)."""
    out = xb.flip(-1 if axis == "horizontal" else -2)
    if channel_map is None:
        return out
    height, per_pixel = channel_map.shape
    channels = out.shape[1]
    if channels % per_pixel or height != out.shape[2]:
        raise ValueError(f"a channel map {channel_map.shape} does not fit images {out.shape[1:]}")
    groups = np.arange(channels) // per_pixel * per_pixel
    index = groups[None, :] + channel_map[:, np.arange(channels) % per_pixel]  # (H, C)
    index = torch.from_numpy(index.T.copy()).to(out.device)[None, :, :, None]
    return torch.gather(out, 1, index.expand_as(out))


def random_flips(xb: torch.Tensor, rng: np.random.Generator,
                 channel_maps: Mapping[str, np.ndarray] | None = None) -> torch.Tensor:
    """Flip each image of a (B, C, H, W) batch horizontally and/or vertically at random;
    ``channel_maps`` (a data set's ``info.extra['flip_channel_maps']``) permutes the channels
    of each pixel with the flip (see :func:`flip_image`)."""
    maps = channel_maps or {}
    for axis in ("horizontal", "vertical"):
        chosen = torch.from_numpy(rng.random(len(xb)) < 0.5).to(xb.device)
        xb = torch.where(chosen[:, None, None, None], flip_image(xb, axis, maps.get(axis)), xb)
    return xb


def input_keys(model: nn.Module) -> tuple[str, ...]:
    """The data arrays a model takes as arguments (``input_keys``; default ``("x",)``)."""
    return tuple(getattr(getattr(model, "module", model), "input_keys", ("x",)))


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for the boolean ``positive`` (ties averaged)."""
    from scipy.stats import rankdata

    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


#: Signal efficiency at which ``<split>_rejection_<pair>`` is read (WatChMaL's working point
#: style: background rejection 1/ε_bkg at a fixed signal efficiency); a data set may set
#: ``info.extra['rejection_efficiency']``.
REJECTION_EFFICIENCY = 0.8


def rejection_at_efficiency(scores: np.ndarray, positive: np.ndarray,
                            efficiency: float = REJECTION_EFFICIENCY) -> float:
    """Background rejection 1/ε_bkg of the cut on ``scores`` that keeps at least
    ``efficiency`` of the signal (``positive``). Where no background passes, the rejection is
    bounded by the background count (one passing event), so the value stays finite."""
    signal, background = np.sort(scores[positive])[::-1], scores[~positive]
    if len(signal) == 0 or len(background) == 0:
        return float("nan")
    cut = signal[max(math.ceil(efficiency * len(signal)) - 1, 0)]
    passed = float((background >= cut).mean())
    return 1.0 / max(passed, 1.0 / len(background))


class ClassifyKind(Kind):
    """Cross-entropy classification of ``arrays['x']`` into ``arrays['y']``.

    Config keys used: ``batch_size``; ``background`` (optional): a uniform offset drawn from
    U(0, background) is added to each training pattern (seed 003's augmentation);
    ``flip_augment`` (optional): random horizontal/vertical flips of image inputs (seed 000's);
    ``l1`` (optional): weight of an L1 penalty on the weights (seed 004's regulariser).
    A model with ``input_keys`` (e.g. ``("x", "phen")``) receives those arrays as arguments.
    Two classes add ``<split>_auc`` (ROC AUC of class 1).
    ``info.extra['roc_pairs']`` (optional): ``(name, signal class, background class)`` triples;
    each adds ``<split>_auc_<name>``, the ROC AUC of p(signal)/(p(signal)+p(background)) on
    the events of those two classes, and ``<split>_rejection_<name>``, the background rejection
    1/ε_bkg of that score at a fixed signal efficiency (``info.extra['rejection_efficiency']``,
    default 0.8; :func:`rejection_at_efficiency`). Figures: the confusion matrix and those ROC
    curves.
    """

    def batch_loss(self, model, data, idx, cfg, rng, ctx):
        device = ctx.device
        inputs = [fetch(data, key, idx, cfg, device) for key in input_keys(model)]
        xb = inputs[0]
        yb = fetch(data, "y", idx, cfg, device, torch.long)
        background = float(cfg.get("background", 0.0))
        if background > 0:
            shape = (len(idx),) + (1,) * (xb.dim() - 1)
            xb = xb + torch.from_numpy(rng.uniform(0, background, shape)).to(xb)
        if bool(cfg.get("flip_augment", False)) and xb.dim() == 4:
            xb = random_flips(xb, rng, data.info.extra.get("flip_channel_maps"))
        logits = model(xb, *inputs[1:])
        loss = F.cross_entropy(logits.float(), yb)
        l1 = float(cfg.get("l1", 0.0))
        if l1 > 0:
            loss = loss + l1 * sum(p.abs().sum() for p in model.parameters() if p.dim() > 1)
        correct = (logits.argmax(-1) == yb).sum()
        return loss, {"train_loss": loss.detach(), "train_top1": correct / len(idx)}

    @torch.no_grad()
    def predict(self, model, data, indices, cfg, ctx) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities and true labels of ``indices``."""
        model.eval()
        probs, labels = [], []
        keys = input_keys(model)
        for idx in iterate_minibatches(indices, max(int(cfg["batch_size"]), 256), None):
            inputs = [fetch(data, key, idx, cfg, ctx.device) for key in keys]
            with ctx.autocast():
                logits = model(*inputs).float()
            probs.append(torch.softmax(logits, -1).cpu().numpy())
            labels.append(np.asarray(data.batch("y", idx, cfg), dtype=np.int64))
        return np.concatenate(probs), np.concatenate(labels)

    def evaluate(self, model, data, split, cfg, ctx):
        indices = getattr(data, split)
        probs, labels = self.predict(model, data, indices, cfg, ctx)
        n = max(len(labels), 1)
        picked = np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)
        top = np.argsort(-probs, axis=1)[:, : min(3, probs.shape[1])]
        metrics = {f"{split}_loss": float(-np.log(picked).sum() / n),
                   f"{split}_top1": float((top[:, 0] == labels).sum() / n),
                   f"{split}_top3": float((top == labels[:, None]).any(-1).sum() / n)}
        curves = {}
        if probs.shape[1] == 2:
            auc = roc_auc(probs[:, 1], labels == 1)
            if math.isfinite(auc):
                metrics[f"{split}_auc"] = auc
                curves["class_1"] = (probs[:, 1], labels == 1, auc)
        for name, signal, background in data.info.extra.get("roc_pairs", ()):
            mask = (labels == signal) | (labels == background)
            score = probs[mask, signal] / np.clip(probs[mask, signal] + probs[mask, background],
                                                  1e-12, None)
            auc = roc_auc(score, labels[mask] == signal)
            if math.isfinite(auc):  # both classes present
                metrics[f"{split}_auc_{name}"] = auc
                metrics[f"{split}_rejection_{name}"] = rejection_at_efficiency(
                    score, labels[mask] == signal,
                    float(data.info.extra.get("rejection_efficiency", REJECTION_EFFICIENCY)))
                curves[name] = (score, labels[mask] == signal, auc)
        if split == "val":  # kept for figures() of this epoch
            ctx.scratch["last_eval"] = {"probs": probs, "labels": labels, "curves": curves}
        return metrics

    def figures(self, model, data, cfg, ctx) -> dict[str, Any]:
        """Confusion matrix (and ROC curves) of the last validation pass, deferred pictures."""
        from trainables import figures

        last = ctx.scratch.get("last_eval")
        if not last:
            return {}
        names = data.info.class_names or tuple(str(i) for i in range(data.info.num_classes))
        # deferred: drawn by the driver as it logs them (see trainables.figures)
        out: dict[str, Any] = {"confusion_matrix": figures.later(
            "confusion_matrix", last["labels"], last["probs"].argmax(1), list(names))}
        if last["curves"]:
            out["roc"] = figures.later("roc", last["curves"])
        return out


register_kind("classify", ClassifyKind())


def make_optimizer(model: nn.Module, cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """Optimizer from config keys ``optimizer`` (adam|adamw|sgd|rmsprop), ``lr``, ``eps``,
    ``weight_decay``, ``momentum``."""
    name = str(cfg.get("optimizer", "adam")).lower()
    lr = float(cfg["lr"])
    wd = float(cfg.get("weight_decay", 0.0))
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, eps=float(cfg.get("eps", 1e-8)),
                                weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, eps=float(cfg.get("eps", 1e-8)),
                                 weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=float(cfg.get("momentum", 0.9)),
                               weight_decay=wd)
    if name == "rmsprop":
        return torch.optim.RMSprop(model.parameters(), lr=lr, weight_decay=wd)
    raise ValueError(f"unknown optimizer {name!r}")


@dataclass(frozen=True)
class FitSettings:
    """Platform settings of one trial (not searched)."""

    max_epochs: int
    seed: int = 0
    device: str = "cpu"
    precision: str = "fp32"
    #: (rank, world size) of a data-parallel worker: it trains on its shard of the train split
    shard: tuple[int, int] | None = None
    #: the kind's figures (PNG) go with the checkpoint of every ``figure_every``-th epoch and
    #: of the last epoch (0: never); each costs a fraction of a second to draw
    figure_every: int = 3
    #: report the restored checkpoint's epochs again (its history, then its own epoch) before
    #: training on: where the driver may not have received their results (a multi-worker
    #: trial resumes from its Ray Train run's newest checkpoint, and rank 0 goes on training
    #: and checkpointing after the driver stopped listening); the tracker and the searcher
    #: take each epoch once, so results the driver did receive are not doubled
    replay_restored_epoch: bool = False

    def figure_epoch(self, epoch: int) -> bool:
        every = self.figure_every
        return every > 0 and (epoch % every == 0 or epoch == self.max_epochs)


def shard_splits(data: DataSplits, rank: int, world: int) -> DataSplits:
    """The train split of worker ``rank`` of ``world``: equal sizes on every worker, so all
    take the same number of steps (DDP hangs otherwise). Val/test stay whole."""
    per_worker = len(data.train) // world
    train = data.train[rank::world][:per_worker]
    return dataclasses.replace(data, train=train)


class Fitted(dict):
    """What :func:`fit` returns: the last epoch's metrics (a dict), with the trained model as
    ``.model`` (unwrapped from data parallelism)."""

    model: nn.Module | None = None


def fit(space: Any, config: Mapping[str, Any], data: DataSplits, settings: FitSettings,
        report: ReportFn | None = None, state: Mapping[str, Any] | None = None,
        prepare_model: Callable[[nn.Module], nn.Module] | None = None) -> Fitted:
    """Train ``space``'s model with ``config`` for up to ``settings.max_epochs`` epochs.

    ``state`` (a previous checkpoint state) resumes after its epoch. ``report(metrics, state)``
    is called after every epoch with the epoch's metrics and the state to checkpoint; the
    state holds the metrics of every epoch so far (``history``).
    ``prepare_model`` wraps the model for data-parallel training (e.g. DDP); checkpoints
    always hold the unwrapped model. Returns the metrics of the last epoch, the trained model
    as ``.model``.
    """
    kind = get_kind(space.kind)
    ctx = StepContext.create(settings.device, settings.precision)
    device = ctx.device
    torch.manual_seed(settings.seed)
    if settings.shard is not None:
        data = shard_splits(data, *settings.shard)
    core = space.build(config, data.info).to(device)
    start_epoch = 0
    history: list[dict[str, float | int]] = []  # every epoch's metrics, kept in the checkpoint
    if state is not None:
        core.load_state_dict(state["model"])
        start_epoch = int(state["epoch"])
        history = [dict(m) for m in state.get("history") or
                   ([state["metrics"]] if state.get("metrics") else [])]
    model = prepare_model(core) if prepare_model is not None else core
    opt = kind.make_optimizer(model, config)
    if state is not None:
        opt.load_state_dict(state["optimizer"])
    config = dict(config)
    metrics: Metrics = {}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    if state is not None and report is not None and start_epoch > 0 and (
            start_epoch >= settings.max_epochs or settings.replay_restored_epoch):
        # The checkpoint already holds the last epoch (the driver stopped after the trial
        # wrote it, before Ray marked the trial done): report that epoch again instead of
        # ending without a result, which Tune would refuse for lacking the metric. With
        # ``replay_restored_epoch`` any restored epoch is reported again, after the earlier
        # epochs of its history (FitSettings).
        if settings.replay_restored_epoch:
            for earlier in history:
                if 0 < int(earlier.get("epoch", 0)) < start_epoch:
                    report(dict(earlier), None)
        metrics = dict(state.get("metrics") or {})
        pictures_due = settings.figure_epoch(start_epoch)
        if not metrics or pictures_due:  # a kind's pictures are of its last validation pass
            evaluated = dict(kind.evaluate(model, data, "val", config, ctx))
            if not metrics:
                metrics = {**evaluated, "epoch": start_epoch}
        new_state = {"model": core.state_dict(), "optimizer": opt.state_dict(),
                     "epoch": start_epoch, "metrics": metrics, "history": history}
        if pictures_due and (settings.shard is None or settings.shard[0] == 0):
            new_state[FIGURES_KEY] = kind.figures(model, data, config, ctx)
        report(dict(metrics), new_state)
    for epoch in range(start_epoch + 1, settings.max_epochs + 1):
        t0 = time.perf_counter()
        rng = np.random.default_rng([settings.seed, epoch])
        metrics = dict(kind.train_epoch(model, data, opt, config, rng, ctx))
        metrics.update(kind.evaluate(model, data, "val", config, ctx))
        bad = [k for k, v in metrics.items() if not math.isfinite(v)]
        if bad:
            raise TrialDiverged(f"non-finite metrics at epoch {epoch}: {', '.join(bad)}")
        metrics["epoch"] = epoch
        metrics["epoch_seconds"] = time.perf_counter() - t0
        if device.type == "cuda":  # what this process's trial holds on its GPU (MiB, peak)
            metrics["gpu_memory_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        history.append(plain_metrics(metrics))
        if report is not None:
            new_state = {"model": core.state_dict(), "optimizer": opt.state_dict(),
                         "epoch": epoch, "metrics": plain_metrics(metrics),
                         "history": list(history)}
            if settings.figure_epoch(epoch) and (settings.shard is None or settings.shard[0] == 0):
                new_state[FIGURES_KEY] = kind.figures(model, data, config, ctx)
            report(metrics, new_state)
    fitted = Fitted(metrics)
    fitted.model = core
    return fitted


def plain_metrics(metrics: Mapping[str, Any]) -> dict[str, float | int]:
    """Metrics as plain Python numbers (what a ``weights_only`` checkpoint load accepts)."""
    return {k: int(v) if k == "epoch" else float(v) for k, v in metrics.items()}
