"""``python launch.py report --experiment NAME``: which settings mattered, in pictures.

Reads a finished (or interrupted) search from its durable records: the experiment state
(``<storage>/.scitune/NAME/state.json``), the Optuna study mirrored into
``<storage>/optuna.log`` and the experiment's MLflow runs. Draws PNGs (matplotlib, Agg) of the
optimisation history, fANOVA parameter importances, parallel coordinates, slice plots, the
learning curves of the top trials, the trials that survived each ASHA rung, and copies the
best trial's own figures (confusion matrix, ROC, ...). One self-contained HTML page (images as
``data:`` URIs) shows them with captions; everything is written to ``--out`` and logged to the
experiment's MLflow parent run under ``report/``.

A trial's value is the best objective it reported at any epoch, as in the end-of-search
summary (a trial ASHA stopped early keeps the value of its last rung).

Libraries and hand-written code: the importances are Optuna's (``optuna.importance``, fANOVA)
and the study is Optuna's own journal; the record of the search is
:class:`tracking.record.SearchRecord`. The pictures are drawn here with matplotlib because
Optuna's plots (``optuna.visualization.matplotlib``: history, parallel coordinates, slices,
importances) draw COMPLETE trials only, and under ASHA most trials end PRUNED: they would
leave out most of the search, and they cannot mark the seed configuration and the best
trial or show the ASHA rungs. The learning curves are Optuna's intermediate values.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import math
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.errors import BadInput

REDUCTION_FACTOR = 3  # the ASHA scheduler's (search.driver.make_scheduler)
MIN_IMPORTANCE_TRIALS = 5  # fANOVA on fewer trials is noise
MAX_IMPORTANCES = 15  # bars in the importance chart
MAX_AXES = 8  # parameters on the parallel-coordinates plot
MAX_SLICES = 6  # slice plots
TOP_CURVES = 5  # learning curves drawn in colour
COLORS = {"COMPLETE": "tab:blue", "PRUNED": "0.55", "FAIL": "black", "RUNNING": "tab:purple"}
SEED_COLOR, BEST_COLOR = "tab:orange", "tab:red"


# -- data ----------------------------------------------------------------------------------
@dataclass
class TrialView:
    """One Optuna trial as the report sees it."""

    number: int
    state: str  # COMPLETE, PRUNED (stopped early by the scheduler), FAIL, RUNNING
    params: dict[str, Any]
    distributions: dict[str, Any]
    curve: dict[int, float]  # epoch -> objective
    value: float | None  # best objective over its epochs (None: never reported)
    ray_id: str | None = None
    is_seed: bool = False

    @property
    def epochs(self) -> int:
        """The last epoch the trial reported."""
        return max(self.curve, default=0)


@dataclass
class Picture:
    """A picture of the page: ``png`` is None when it was skipped (``caption`` says why)."""

    name: str
    title: str
    caption: str
    png: bytes | None = None


@dataclass
class Report:
    """Everything read from the experiment's records."""

    experiment: str
    space: Any
    settings: dict[str, Any]
    trials: list[TrialView]
    best: TrialView
    seed: TrialView | None
    parent_run_id: str
    best_run_id: str | None
    importances: dict[str, float] = field(default_factory=dict)
    importance_note: str = ""

    @property
    def sign(self) -> float:
        """+1 when larger objective values are better, -1 otherwise."""
        return 1.0 if self.space.mode == "max" else -1.0

    @property
    def scored(self) -> list[TrialView]:
        """Trials with a value, best first."""
        return sorted((t for t in self.trials if t.value is not None), key=lambda t: -self.sign * t.value)


def asha_rungs(grace_epochs: int, max_epochs: int, reduction_factor: int = REDUCTION_FACTOR) -> list[int]:
    """The epochs at which ASHA compares trials: ``grace * rf**k`` up to ``max_epochs``, with
    ``max_epochs`` itself as the last milestone (the trials that ran to the end)."""
    rungs, epoch = [], max(1, int(grace_epochs))
    while epoch <= max_epochs:
        rungs.append(epoch)
        epoch *= reduction_factor
    if not rungs or rungs[-1] != max_epochs:
        rungs.append(int(max_epochs))
    return rungs


def rung_survival(epochs_reached: Sequence[int], grace_epochs: int, max_epochs: int,
                  reduction_factor: int = REDUCTION_FACTOR) -> list[tuple[int, int]]:
    """``[(rung epoch, number of trials that reported at least that many epochs), ...]``."""
    return [(rung, sum(1 for e in epochs_reached if e >= rung))
            for rung in asha_rungs(grace_epochs, max_epochs, reduction_factor)]


def trial_views(study: Any, seed_trial_id: str | None, mode: str) -> list[TrialView]:
    """The study's trials with their per-epoch objective; the seed configuration's trial
    marked (the one whose Ray trial the tracker tagged as the seed, else trial 0)."""
    from tracking.record import best_value

    views = []
    for t in study.get_trials(deepcopy=False):
        curve = {int(k): float(v) for k, v in sorted(t.intermediate_values.items())
                 if v is not None and math.isfinite(v)}
        finite = list(curve.values())
        if t.value is not None and math.isfinite(t.value):
            finite.append(float(t.value))
        views.append(TrialView(number=t.number, state=t.state.name, params=dict(t.params),
                               distributions=dict(t.distributions), curve=curve,
                               value=best_value(finite, mode),
                               ray_id=t.user_attrs.get("ray_trial_id")))
    # The driver always evaluates the seed configuration first: trial 0 stands in for an
    # older search whose seed run was not tagged.
    seeds = [v for v in views if seed_trial_id and v.ray_id == seed_trial_id] or \
        [v for v in views if v.number == 0 and v.params]
    if seeds:
        seeds[0].is_seed = True
    return views


def parameter_importances(trials: list[TrialView], mode: str, grace_epochs: int
                          ) -> tuple[dict[str, float], str]:
    """Optuna's fANOVA importances and a sentence saying what they were computed on.

    On the trials that ran to the end when there are at least ``MIN_IMPORTANCE_TRIALS`` of
    them; otherwise (ASHA stops most trials early) on every trial's value at the first rung
    (``grace_epochs``), where all trials are compared at equal training. Empty when neither
    has enough trials."""
    import optuna

    complete = [t for t in trials if t.state == "COMPLETE" and t.value is not None and t.params]
    at_grace = [t for t in trials if grace_epochs in t.curve and t.params]
    if len(complete) >= MIN_IMPORTANCE_TRIALS:
        chosen, basis = [(t, t.value) for t in complete], \
            f"the {len(complete)} trials that ran every epoch (their best value)"
    elif len(at_grace) >= MIN_IMPORTANCE_TRIALS:
        chosen, basis = [(t, t.curve[grace_epochs]) for t in at_grace], \
            (f"the value after {grace_epochs} epoch(s) of all {len(at_grace)} trials that reached "
             f"it (only {len(complete)} ran every epoch, fewer than {MIN_IMPORTANCE_TRIALS})")
    else:
        return {}, (f"too few trials for fANOVA: {len(complete)} ran every epoch and "
                    f"{len(at_grace)} reached epoch {grace_epochs}; it needs "
                    f"{MIN_IMPORTANCE_TRIALS}. Run more --trials")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    study.add_trials([optuna.trial.create_trial(params=t.params, distributions=t.distributions,
                                                value=value) for t, value in chosen])
    try:
        found = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    except (ValueError, RuntimeError) as exc:
        return {}, f"fANOVA failed ({exc})"
    if not found:
        return {}, "fANOVA found no parameter shared by all of these trials"
    return {k: float(v) for k, v in found.items()}, f"fANOVA (Optuna, seed 0) on {basis}"


def ranked_params(report: Report) -> list[str]:
    """Parameters by importance, then the rest that vary, in the order of the search space."""
    order: list[str] = []
    for t in report.trials:
        order += [k for k in t.params if k not in order]
    varying = [k for k in order if len({str(t.params[k]) for t in report.trials if k in t.params}) > 1]
    return [k for k in report.importances if k in varying] + \
        [k for k in varying if k not in report.importances]


# -- pictures ------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.grid": True, "grid.alpha": 0.3})
    return plt


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    _pyplot().close(fig)
    return buffer.getvalue()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "-" if not math.isfinite(value) else f"{value:.4g}"
    return "-" if value is None else str(value)


def _mark_trials(ax: Any, report: Report, xs: dict[int, Any], counts: bool = True) -> None:
    """Scatter each trial (x from ``xs`` by trial number) by state; seed and best ringed."""
    for state, marker in (("COMPLETE", "o"), ("PRUNED", "o"), ("FAIL", "x"), ("RUNNING", "s")):
        group = [t for t in report.trials if t.state == state and t.value is not None and t.number in xs]
        if not group:
            continue
        hollow = state == "PRUNED"
        label = {"COMPLETE": "ran every epoch", "PRUNED": "stopped early (pruned)",
                 "FAIL": "failed", "RUNNING": "interrupted"}[state]
        ax.scatter([xs[t.number] for t in group], [t.value for t in group], marker=marker, s=30,
                   facecolors="none" if hollow else COLORS[state], edgecolors=COLORS[state],
                   label=f"{label} ({len(group)})" if counts else label, zorder=3)
    for t, color, label, marker in ((report.seed, SEED_COLOR, "seed configuration", "*"),
                                    (report.best, BEST_COLOR, "best trial", "D")):
        if t is not None and t.value is not None and t.number in xs:
            ax.scatter([xs[t.number]], [t.value], marker=marker, s=140 if marker == "*" else 70,
                       facecolors="none" if marker == "D" else color, edgecolors=color,
                       linewidths=1.5, label=f"{label} (#{t.number})", zorder=4)


def history_picture(report: Report) -> Picture:
    """Objective of every trial in order, with the best-so-far line."""
    plt = _pyplot()
    metric = report.space.metric
    fig, ax = plt.subplots(figsize=(8, 4.2))
    _mark_trials(ax, report, {t.number: t.number for t in report.trials})
    xs, best_so_far, current = [], [], None
    for t in sorted(report.trials, key=lambda t: t.number):
        if t.value is not None and (current is None or report.sign * t.value > report.sign * current):
            current = t.value
        if current is not None:
            xs.append(t.number)
            best_so_far.append(current)
    ax.step(xs, best_so_far, where="post", color=BEST_COLOR, lw=1.5, label="best so far")
    ax.set_xlabel("trial number (order of suggestion)")
    ax.set_ylabel(f"{metric} (best over its epochs)")
    ax.set_title(f"{report.experiment}: optimisation history ({metric}, {report.space.mode})")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    seed_text = (f"; the seed configuration (trial #{report.seed.number}, star) scored "
                 f"{_fmt(report.seed.value)}" if report.seed else "")
    return Picture("history", "Optimisation history",
                   f"Each point is one trial's best {metric}; hollow points were stopped early by "
                   f"the scheduler, so their value is from fewer epochs. The red line is the best so "
                   f"far{seed_text}.", _png(fig))


def importance_picture(report: Report) -> Picture:
    """Horizontal bars of the fANOVA importances (or a caption saying why there are none)."""
    title = "Parameter importances"
    if not report.importances:
        return Picture("importances", title, f"Not drawn: {report.importance_note}.")
    plt = _pyplot()
    items = list(report.importances.items())[:MAX_IMPORTANCES]
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(items) + 1.2))
    names, values = [k for k, _ in items][::-1], [v for _, v in items][::-1]
    ax.barh(names, values, color="tab:blue")
    for y, v in enumerate(values):
        ax.text(v, y, f" {100 * v:.0f}%", va="center", fontsize=8)
    ax.set_xlim(0, max(values) * 1.15 or 1)
    ax.set_xlabel(f"share of the variance of {report.space.metric} (fANOVA)")
    ax.set_title(f"{report.experiment}: which parameters mattered")
    ax.grid(axis="y", alpha=0)
    fig.tight_layout()
    more = len(report.importances) - len(items)
    return Picture("importances", title,
                   f"Share of the objective's variance explained by each parameter alone: "
                   f"{report.importance_note}. Parameters absent from some trials (conditional on "
                   f"another choice) are left out"
                   + (f"; {more} less important not shown." if more > 0 else "."), _png(fig))


def _axis_scale(name: str, trials: list[TrialView]) -> tuple[str, Any, Any]:
    """How to place a parameter on a [0, 1] axis: ("cat", choices, None) or
    ("num", low, high) / ("log", low, high) over the union of its distributions."""
    dists = [t.distributions[name] for t in trials if name in t.distributions]
    if any(hasattr(d, "choices") for d in dists):
        choices: list[Any] = []
        for d in dists:
            for c in getattr(d, "choices", ()):
                if all(str(c) != str(o) for o in choices):
                    choices.append(c)
        return "cat", choices, None
    low = min(float(d.low) for d in dists)
    high = max(float(d.high) for d in dists)
    return ("log" if all(getattr(d, "log", False) for d in dists) and low > 0 else "num"), low, high


def _to_unit(value: Any, scale: tuple[str, Any, Any]) -> float:
    kind, a, b = scale
    if kind == "cat":
        index = next((i for i, c in enumerate(a) if str(c) == str(value)), 0)
        return index / max(len(a) - 1, 1)
    if kind == "log":
        a, b, value = math.log(a), math.log(b), math.log(max(float(value), 1e-300))
    return 0.5 if b == a else (float(value) - a) / (b - a)


def _end_label(value: float, kind: str) -> str:
    return str(int(value)) if kind == "num" and float(value).is_integer() else f"{value:.3g}"


def parallel_picture(report: Report, params: list[str]) -> Picture:
    """One line per trial across the most important parameters and the objective."""
    title = "Parallel coordinates"
    params = params[:MAX_AXES]
    scored = [t for t in report.trials if t.value is not None]
    if not params or not scored:
        return Picture("parallel", title, "Not drawn: no parameter took more than one value.")
    plt = _pyplot()
    import matplotlib
    from matplotlib import cm, colors

    metric = report.space.metric
    values = [t.value for t in scored]
    norm = colors.Normalize(min(values), max(values) if max(values) > min(values) else min(values) + 1e-12)
    cmap = matplotlib.colormaps["viridis" if report.space.mode == "max" else "viridis_r"]
    scales = [_axis_scale(p, report.trials) for p in params]
    fig, ax = plt.subplots(figsize=(max(8.0, 1.15 * (len(params) + 1)), 4.8))
    xs = list(range(len(params) + 1))
    emphasised = {id(report.best): (BEST_COLOR, 3.0), id(report.seed): (SEED_COLOR, 2.5)}
    for t in sorted(scored, key=lambda t: (id(t) in emphasised, report.sign * t.value)):
        ys = [(_to_unit(t.params[p], s) if p in t.params else float("nan")) for p, s in zip(params, scales,
                                                                                             strict=True)]
        ys.append(norm(t.value))
        color, width = emphasised.get(id(t), (cmap(norm(t.value)), 1.2))
        ax.plot(xs, ys, color=color, lw=width, ls="--" if t.state == "PRUNED" else "-",
                alpha=0.95 if id(t) in emphasised else 0.75, marker="o", ms=3)
    label_box = {"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8}
    for x, (kind, a, b) in enumerate(scales):
        ax.axvline(x, color="0.3", lw=0.8)
        if kind == "cat":
            for i, c in enumerate(a):
                ax.text(x + 0.04, i / max(len(a) - 1, 1), str(c), fontsize=7, va="center", bbox=label_box)
        else:
            ax.text(x, -0.04, _end_label(a, kind), fontsize=7, va="top", ha="center")
            ax.text(x, 1.04, _end_label(b, kind), fontsize=7, va="bottom", ha="center")
    ax.axvline(xs[-1], color="0.3", lw=0.8)
    ax.text(xs[-1], -0.04, f"{norm.vmin:.4g}", fontsize=7, va="top", ha="center")
    ax.text(xs[-1], 1.04, f"{norm.vmax:.4g}", fontsize=7, va="bottom", ha="center")
    ax.set_xticks(xs, [*params, metric], rotation=25, ha="right")
    ax.tick_params(axis="x", pad=12)
    ax.set_yticks([])
    ax.set_xlim(-0.3, xs[-1] + 0.5)
    ax.set_ylim(-0.1, 1.1)
    ax.grid(False)
    fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, pad=0.01, label=metric)
    handles = [plt.Line2D([], [], color=BEST_COLOR, lw=3, label=f"best trial #{report.best.number}"),
               plt.Line2D([], [], color="0.4", ls="--", label="stopped early")]
    if report.seed is not None:
        handles.insert(1, plt.Line2D([], [], color=SEED_COLOR, lw=2.5,
                                     label=f"seed configuration #{report.seed.number}"))
    fig.legend(handles=handles, fontsize=8, loc="lower center", ncol=3, frameon=False)
    ax.set_title(f"{report.experiment}: trials across the {len(params)} "
                 f"{'most important' if report.importances else ''} parameters".replace("  ", " "))
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return Picture("parallel", title,
                   f"Each line is a trial, coloured by its {metric} (yellow is better); each axis "
                   f"spans the searched range (log axes for log-uniform parameters, labels at the "
                   f"ends). Dashed: stopped early. A gap: the parameter did not apply to that trial.",
                   _png(fig))


def slice_picture(report: Report, params: list[str]) -> Picture:
    """The objective against each of the most important parameters."""
    title = "Slice plots"
    params = params[:MAX_SLICES]
    if not params:
        return Picture("slices", title, "Not drawn: no parameter took more than one value.")
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator, NullFormatter

    cols = min(3, len(params))
    rows = math.ceil(len(params) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 2.9 * rows), squeeze=False, sharey=True)
    for ax, p in zip(axes.flat, params, strict=False):
        kind, a, b = _axis_scale(p, report.trials)
        xs = {}
        for t in report.trials:
            if p in t.params and t.value is not None:
                value = t.params[p]
                xs[t.number] = (next(i for i, c in enumerate(a) if str(c) == str(value))
                                if kind == "cat" else float(value))
        _mark_trials(ax, report, xs, counts=False)
        if kind == "cat":
            ax.set_xticks(range(len(a)), [str(c) for c in a])
            ax.set_xlim(-0.5, len(a) - 0.5)
        elif kind == "log":  # the searched range: a best value at its edge says "search wider"
            ax.set_xscale("log")
            ax.set_xlim(a / (b / a) ** 0.04, b * (b / a) ** 0.04)
            ax.xaxis.set_minor_formatter(NullFormatter())
        else:
            ax.set_xlim(a - 0.04 * (b - a or 1), b + 0.04 * (b - a or 1))
        if kind == "num" and all(type(t.distributions[p]).__name__ == "IntDistribution"
                                 for t in report.trials if p in t.distributions):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        share = report.importances.get(p)
        ax.set_title(p + (f"  ({100 * share:.0f}%)" if share is not None else ""), fontsize=9)
    for ax in axes.flat[len(params):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel(report.space.metric)
    legend: dict[str, Any] = {}
    for ax in axes.flat[:len(params)]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, (handle, label))
    handles, labels = [h for h, _ in legend.values()], [lb for _, lb in legend.values()]
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=7, frameon=False)
    fig.suptitle(f"{report.experiment}: {report.space.metric} against single parameters", fontsize=10)
    fig.tight_layout(rect=(0, 0.06 if rows > 1 else 0.1, 1, 1))
    which = "most important" if report.importances else "first varying"
    return Picture("slices", title,
                   f"{report.space.metric} of every trial against each of the {len(params)} {which} "
                   f"parameters (importance in brackets). A trend or a cluster of good points shows "
                   f"where to search next; hollow points were stopped early.", _png(fig))


def curves_picture(report: Report) -> Picture:
    """Objective per epoch of the top trials (and the seed), the others faint."""
    plt = _pyplot()
    metric = report.space.metric
    top = report.scored[:TOP_CURVES]
    shown = top + ([report.seed] if report.seed is not None and report.seed not in top else [])
    fig, ax = plt.subplots(figsize=(9, 4.2))
    for t in report.trials:
        if t not in shown and t.curve:
            ax.plot(list(t.curve), list(t.curve.values()), color="0.75", lw=0.8, zorder=1)
    palette = [plt.get_cmap("tab10")(i) for i in (0, 2, 4, 5, 6, 8, 9)]  # not the best's or seed's
    for i, t in enumerate(shown):
        if not t.curve:
            continue
        tags = [x for x, on in (("best", t is report.best), ("seed", t.is_seed),
                                ("stopped early", t.state == "PRUNED")) if on]
        color = BEST_COLOR if t is report.best else SEED_COLOR if t.is_seed else palette[i % len(palette)]
        ax.plot(list(t.curve), list(t.curve.values()), marker="o", ms=4, color=color,
                lw=2.2 if t is report.best else 1.5, ls=":" if t.is_seed and t is not report.best else "-",
                label=f"#{t.number}: {_fmt(t.value)}" + (f" ({', '.join(tags)})" if tags else ""), zorder=3)
    settings = report.settings
    if settings.get("scheduler") == "asha":
        for rung in asha_rungs(int(settings.get("grace_epochs", 1)), int(settings["max_epochs"]))[:-1]:
            ax.axvline(rung, color="0.5", ls="--", lw=0.8)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.margins(x=0.05)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"{report.experiment}: learning curves of the top {len(top)} trials")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), title=f"trial: best {metric}",
              title_fontsize=8)
    fig.tight_layout()
    seed_text = " and the seed configuration (dotted)" if report.seed and report.seed not in top else ""
    rung_text = ("; dashed verticals: ASHA rungs, where trials below the top third are stopped"
                 if settings.get("scheduler") == "asha" else "")
    return Picture("learning_curves", "Learning curves",
                   f"{metric} after each epoch for the {len(top)} best trials{seed_text}; grey: the "
                   f"other trials{rung_text}.", _png(fig))


def rungs_picture(report: Report) -> Picture:
    """Bar chart of the trials that reached each ASHA rung (each epoch for other schedulers)."""
    plt = _pyplot()
    settings = report.settings
    grace, max_epochs = int(settings.get("grace_epochs", 1)), int(settings["max_epochs"])
    asha = settings.get("scheduler", "asha") == "asha"
    reached = [t.epochs for t in report.trials]
    counts = (rung_survival(reached, grace, max_epochs) if asha
              else [(e, sum(1 for r in reached if r >= e)) for e in range(1, max_epochs + 1)])
    fig, ax = plt.subplots(figsize=(min(max(5.0, 0.5 * len(counts) + 2), 11.0), 3.6))
    labels = [f"epoch {e}" + (f"\nrung {i}" if asha and e != max_epochs else "\nall epochs"
                              if e == max_epochs else "") for i, (e, _) in enumerate(counts)]
    bars = ax.bar(range(len(counts)), [n for _, n in counts], color="tab:green")
    stride = max(1, math.ceil(len(counts) / 20))  # many epochs (no rungs): label some bars
    shown = [i for i in range(len(counts)) if (len(counts) - 1 - i) % stride == 0]  # the last too
    for i, (bar, (_, n)) in enumerate(zip(bars, counts, strict=True)):
        if i in shown:
            ax.text(bar.get_x() + bar.get_width() / 2, n, f"{n}/{len(reached)}", ha="center",
                    va="bottom", fontsize=8 if stride == 1 else 6)
    ax.set_xticks(shown, [labels[i] for i in shown], fontsize=8 if len(shown) < 12 else 6)
    ax.set_ylim(0, max(len(reached), 1) * 1.15)
    ax.set_ylabel("trials")
    ax.grid(axis="x", alpha=0)
    ax.set_title(f"{report.experiment}: trials that reached each "
                 + ("ASHA rung" if asha else "epoch") + f"\n(scheduler {settings.get('scheduler')})",
                 fontsize=10)  # two lines: a long experiment name stays inside the picture
    fig.tight_layout()
    rungs = ", ".join(str(e) for e, _ in counts[:-1] if e < max_epochs) or "none before the last"
    caption = (f"How many of the {len(reached)} trials trained at least that many epochs. ASHA "
               f"(reduction factor {REDUCTION_FACTOR}) compares trials at the rungs (epochs {rungs}; "
               f"grace epochs × {REDUCTION_FACTOR}^k) and lets roughly the top third go on; "
               f"{counts[-1][1]} ran all {max_epochs} epochs" if asha else
               f"How many of the {len(reached)} trials trained at least that many epochs "
               f"(scheduler {settings.get('scheduler')}, no rungs)")
    return Picture("asha_rungs", "Survivors of each rung" if asha else "Survivors of each epoch",
                   caption + ".", _png(fig))


def space_figures(client: Any, run_id: str | None, dest: Path) -> tuple[list[Path], str]:
    """Download the latest ``figures/epoch_NNN/*.png`` of the best trial's run into ``dest``
    (as ``best_<name>.png``); returns the files and a sentence for the page."""
    if not run_id:
        return [], "The search recorded no best trial run, so no figures of it are shown."
    try:
        epochs = [a.path for a in client.list_artifacts(run_id, "figures") if a.is_dir]
    except Exception as exc:  # noqa: BLE001 - MLflow raises several types for a missing run
        return [], f"The best trial's figures could not be listed ({type(exc).__name__})."
    if not epochs:
        return [], "The best trial logged no figures (this space draws none)."
    latest = max(epochs, key=lambda p: int(p.rsplit("_", 1)[-1]) if p.rsplit("_", 1)[-1].isdigit() else -1)
    files = []
    with tempfile.TemporaryDirectory() as tmp:
        for artifact in client.list_artifacts(run_id, latest):
            if artifact.is_dir or not artifact.path.endswith(".png"):
                continue
            local = Path(client.download_artifacts(run_id, artifact.path, tmp))
            target = dest / f"best_{local.name}"
            target.write_bytes(local.read_bytes())
            files.append(target)
    epoch = latest.rsplit("_", 1)[-1].lstrip("0") or "0"
    return files, f"The best trial's own figures after epoch {epoch} (MLflow run {run_id}, {latest}/)."


# -- the page ------------------------------------------------------------------------------
CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1100px;margin:24px auto;
padding:0 16px;color:#222;line-height:1.45}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.9em;margin:.6em 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.diff td{font-weight:600;background:#fff6e0}
img{max-width:100%;height:auto;border:1px solid #eee}
p.caption{font-size:.9em;color:#444;margin-top:.3em}p.skip{color:#8a5a00;font-style:italic}
.figs{display:flex;flex-wrap:wrap;gap:12px}.figs figure{margin:0;max-width:48%}
figcaption{font-size:.85em;color:#444}.cols{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}.small{font-size:.85em;color:#666}
"""


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def summary_rows(report: Report) -> list[tuple[str, str]]:
    """The ``(label, value)`` rows of the table at the top of the page."""
    counts: dict[str, int] = {}
    for t in report.trials:
        counts[t.state] = counts.get(t.state, 0) + 1
    s, space = report.settings, report.space
    trials = (f"{len(report.trials)}: {counts.get('COMPLETE', 0)} complete, {counts.get('PRUNED', 0)} "
              f"pruned (stopped early), {counts.get('FAIL', 0)} failed"
              + (f", {counts['RUNNING']} interrupted" if counts.get("RUNNING") else ""))
    seed = report.seed
    space_file = s.get("space_file")
    narrowed = (f", narrowed by {space_file.get('path')}" if isinstance(space_file, dict)
                else f", narrowed by {space_file}" if space_file else "")
    return [
        ("space", f"{space.name} ({space.kind}, data set {space.dataset}){narrowed}"),
        ("objective", f"{space.metric} ({space.mode})"),
        ("search", f"searcher {s.get('searcher')}, scheduler {s.get('scheduler')}, up to "
                   f"{s.get('max_epochs')} epochs (grace {s.get('grace_epochs')}), seed {s.get('seed')}"),
        ("trials", trials),
        ("best value", f"{_fmt(report.best.value)} (trial #{report.best.number}, "
                       f"{report.best.epochs} epochs)"),
        ("seed configuration", f"{_fmt(seed.value)} (trial #{seed.number}, {seed.epochs} epochs)"
         if seed else "not among the trials"),
    ]


def render_html(report: Report, pictures: list[Picture], figures: list[Path], figures_note: str) -> str:
    """The self-contained page (images inline as ``data:`` URIs)."""
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>scitune report: {e(report.experiment)}</title><style>{CSS}</style></head><body>",
           f"<h1>scitune report: {e(report.experiment)}</h1>",
           f'<p class="small">Generated {time.strftime("%Y-%m-%d %H:%M")} from the experiment state, '
           f"the Optuna study and MLflow parent run {e(report.parent_run_id)}.</p>", "<table>"]
    out += [f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in summary_rows(report)]
    out.append("</table>")
    seed_params = report.seed.params if report.seed else {}
    out.append("<h2>Best configuration</h2>")
    out.append('<p class="caption">Parameters of the best trial beside the seed configuration\'s; '
               "highlighted rows differ.</p>")
    items = list(report.best.params.items())
    per_column = max(1, math.ceil(len(items) / 3)) if len(items) > 10 else len(items)
    out.append('<div class="cols">')
    for start in range(0, len(items), per_column):
        out.append("<table><tr><th>parameter</th><th>best</th><th>seed</th></tr>")
        for k, v in items[start:start + per_column]:
            seed_value = seed_params.get(k)
            differs = report.seed is not None and str(seed_value) != str(v)
            out.append(f'<tr{" class=diff" if differs else ""}><td>{e(k)}</td>'
                       f'<td class="num">{e(_fmt(v))}</td><td class="num">{e(_fmt(seed_value))}</td></tr>')
        out.append("</table>")
    out.append("</div>")
    for pic in pictures:
        out.append(f'<h2 id="{e(pic.name)}">{e(pic.title)}</h2>')
        if pic.png is None:
            out.append(f'<p class="caption skip">{e(pic.caption)}</p>')
        else:
            out.append(_img(pic.png, pic.title))
            out.append(f'<p class="caption">{e(pic.caption)}</p>')
    out.append('<h2 id="best_figures">Best trial\'s figures</h2>')
    out.append(f'<p class="caption{"" if figures else " skip"}">{e(figures_note)}</p>')
    if figures:
        out.append('<div class="figs">')
        for path in figures:
            label = path.stem.removeprefix("best_").replace("_", " ")
            out.append(f"<figure>{_img(path.read_bytes(), label)}"
                       f"<figcaption>{e(label)}</figcaption></figure>")
        out.append("</div>")
    out.append("</body></html>")
    return "\n".join(out)


# -- the sub-command -----------------------------------------------------------------------
def load_report(storage: str, experiment: str, tracking_uri: str | None = None
                ) -> tuple[Report, Any, str]:
    """Read the search's record and Optuna study; returns the report, the MLflow client and
    the tracking URI. Raises :class:`BadInput` for anything the user must fix."""
    from search_spaces import get_space
    from tracking.optuna_store import load_study
    from tracking.record import SearchRecord
    from tracking.state import state_path

    path = state_path(storage, experiment)
    if not path.exists():
        raise BadInput(f"no experiment {experiment!r} in {storage}; check --experiment and --storage")
    search = SearchRecord.load(storage, experiment, tracking_uri)
    settings = search.settings
    if "space" not in settings or "max_epochs" not in settings:
        raise BadInput(f"experiment state {path} lacks its settings; start a new --experiment")
    space = get_space(settings["space"])
    try:
        study = load_study(storage, experiment)
    except KeyError as exc:
        raise BadInput(f"experiment {experiment!r} has no Optuna study ({exc.args[0]}); it predates "
                       "the study journal: run the search again") from None
    # the seed trial as the tracker decided it when the trial started (recorded in the state)
    seed_id = next((k for k, r in search.state.trials.items() if r.get("seed")), None)
    trials = trial_views(study, seed_id, space.mode)
    scored = [t for t in trials if t.value is not None]
    if not scored:
        raise BadInput(f"no trial of experiment {experiment!r} has reported {space.metric} yet; "
                       f"let it run (python launch.py --resume --experiment {experiment})")
    if seed_id is None:  # a search from before the state recorded it: the tracker's tag
        seed_run = search.seed_run()
        seed_id = seed_run.data.tags.get("trial_id") if seed_run is not None else None
        if seed_id and any(view.ray_id == seed_id for view in trials):
            for view in trials:
                view.is_seed = view.ray_id == seed_id
    tags = search.parent.data.tags
    sign = 1.0 if space.mode == "max" else -1.0
    best = max(scored, key=lambda t: (sign * t.value, -t.number))
    best_run_id = tags.get("best_run_id")
    state = search.state
    if best_run_id:  # the search's own choice (the best checkpoint), when it got that far
        ray_id = next((k for k, r in state.trials.items() if r.get("run_id") == best_run_id), None)
        best = next((t for t in scored if ray_id and t.ray_id == ray_id), best)
    else:
        best_run_id = (state.trials.get(best.ray_id or "") or {}).get("run_id")
    seed = next((t for t in trials if t.is_seed), None)
    report = Report(experiment=experiment, space=space, settings=settings, trials=trials, best=best,
                    seed=seed, parent_run_id=search.parent_run_id, best_run_id=best_run_id)
    return report, search.client, search.tracking_uri


def run(args: argparse.Namespace) -> int:
    """The ``report`` sub-command; returns the exit code. (flags parsed by :mod:`cli.report`)."""
    from common.paths import check_experiment_name, check_writable_dir

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    name = args.experiment
    check_experiment_name(name)
    storage = str(Path(args.storage).absolute())
    out = Path(args.out).absolute() if args.out else Path.cwd() / "reports" / name
    check_writable_dir(out, "--out")
    print(f"report: reading experiment {name!r} from {storage}", flush=True)
    override = None
    if args.mlflow_uri is not None:
        from tracking.record import existing_store_uri

        override = existing_store_uri(args.mlflow_uri)
    report, client, uri = load_report(storage, name, override)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"--out {out}: cannot create it ({exc.strerror}); choose a writable folder") from None
    print(f"report: {len(report.trials)} trials of space {report.space.name}; parameter importances "
          "(fANOVA) ...", flush=True)
    report.importances, report.importance_note = parameter_importances(
        report.trials, report.space.mode, int(report.settings.get("grace_epochs", 1)))
    params = ranked_params(report)
    print("report: drawing ...", flush=True)
    pictures = [history_picture(report), importance_picture(report), parallel_picture(report, params),
                slice_picture(report, params), curves_picture(report), rungs_picture(report)]
    written = []
    for pic in pictures:
        if pic.png is not None:
            path = out / f"{pic.name}.png"
            path.write_bytes(pic.png)
            written.append(path)
    print("report: the best trial's figures from MLflow ...", flush=True)
    figures, figures_note = space_figures(client, report.best_run_id, out)
    page = out / "report.html"
    page.write_text(render_html(report, pictures, figures, figures_note), encoding="utf-8")
    print("report: logging to MLflow ...", flush=True)
    for path in [*written, *figures, page]:
        client.log_artifact(report.parent_run_id, str(path), artifact_path="report")
    skipped = [p.title.lower() for p in pictures if p.png is None]
    print(f"report: {len(written) + len(figures)} pictures"
          + (f" (not drawn: {', '.join(skipped)}; the page says why)" if skipped else ""))
    print(f"report page: {page}")
    artifact_uri = client.get_run(report.parent_run_id).info.artifact_uri
    print(f"MLflow:      run {report.parent_run_id}, artifacts {artifact_uri}/report")
    exp_id = client.get_run(report.parent_run_id).info.experiment_id
    where = f"#/experiments/{exp_id}/runs/{report.parent_run_id}/artifacts"
    if uri.startswith(("http://", "https://")):
        print(f"MLflow UI:   {uri.rstrip('/')}/{where}")
    else:
        print(f"MLflow UI:   mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000  → "
              f"http://127.0.0.1:5000/{where}")
    return 0
