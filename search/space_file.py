"""``--space-file FILE.yaml``: narrow, fix or re-choose parameters of a registered space.

    space: resnet1d                      # optional; must match --space
    params:
      lr: {low: 2.0e-4, high: 1.0e-3}    # narrow a range (its log scale and step are kept)
      dropout: {low: 0.0, high: 0.1, step: 0.05}
      n_stages: 4                        # fix a value
      batch_size: {choices: [64, 128]}   # change the choices

A space is define-by-run, so its parameters (names, types, bounds, conditional ones included)
are learnt by running its ``suggest`` on many random trials, and the file is checked against
them: an unknown name, a wrong type or an empty range is an error before anything starts.
Bounds that a space computes from other parameters (e.g. a stride bounded by the feature-map
length so far) are intersected with the file's range on every trial; when the intersection
is empty for a trial, the space's nearest bound is used, so every configuration still builds.

The seed configuration (the first trial) is projected into the narrowed space: fixed values
replace the seed's, values outside a range are clipped into it, and a choice no longer
offered becomes the first listed. The summary compares against that projected seed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.errors import BadInput

RANGE_KEYS = {"low", "high", "step", "log"}
CATALOG_SAMPLES = 300


@dataclasses.dataclass
class ParamInfo:
    """What a space's ``suggest`` does with one name, over every trial seen."""

    kind: str  # "int", "float" or "categorical"
    low: float = math.inf
    high: float = -math.inf
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()


class _Recorder:
    """A trial proxy that records each suggest call's distribution."""

    def __init__(self, trial: Any, catalog: dict[str, ParamInfo]):
        self._trial, self._catalog = trial, catalog

    def _info(self, name: str, kind: str) -> ParamInfo:
        return self._catalog.setdefault(name, ParamInfo(kind))

    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False):
        info = self._info(name, "int")
        info.low, info.high = min(info.low, low), max(info.high, high)
        info.step, info.log = step, log
        return self._trial.suggest_int(name, low, high, step=step, log=log)

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False):
        info = self._info(name, "float")
        info.low, info.high = min(info.low, low), max(info.high, high)
        info.step, info.log = step, log
        return self._trial.suggest_float(name, low, high, step=step, log=log)

    def suggest_categorical(self, name: str, choices: Any):
        info = self._info(name, "categorical")
        info.choices = tuple(dict.fromkeys([*info.choices, *choices]))
        return self._trial.suggest_categorical(name, choices)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trial, name)


def catalog(space: Any, info: Any, samples: int = CATALOG_SAMPLES) -> dict[str, ParamInfo]:
    """Every parameter ``space.suggest`` can ask for, learnt from random trials (and the seed)."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    found: dict[str, ParamInfo] = {}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial(dict(space.seed_config))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(samples):
            trial = study.ask()
            space.suggest(_Recorder(trial, found), info)
            study.tell(trial, 0.0)
    return found


# -- the file ----------------------------------------------------------------------------
def _number(value: Any, what: str) -> float:
    if isinstance(value, bool):
        raise BadInput(f"{what}: {value!r} is not a number")
    if isinstance(value, str):  # YAML reads 1e-3 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            raise BadInput(f"{what}: {value!r} is not a number") from None
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise BadInput(f"{what}: {value!r} is not a finite number")
    return value


def _integer(value: Any, what: str) -> int:
    number = _number(value, what)
    if number != int(number) or (isinstance(value, float) and not value.is_integer()):
        raise BadInput(f"{what}: {value!r} is not an integer")
    return int(number)


def _same_type(value: Any, choices: tuple[Any, ...]) -> bool:
    def kind(v: Any) -> str:
        if v is None:
            return "none"
        if isinstance(v, bool):
            return "bool"
        if isinstance(v, int | float):
            return "number"
        return type(v).__name__

    return not choices or kind(value) in {kind(c) for c in choices}


def normalise(params: Mapping[str, Any], known: Mapping[str, ParamInfo], where: str
              ) -> dict[str, dict[str, Any]]:
    """Validate ``params`` against ``known``; return ``{name: {"fixed"|"choices"|"range": ...}}``."""
    out: dict[str, dict[str, Any]] = {}
    for name, spec in params.items():
        what = f"{where}: {name}"
        if name not in known:
            close = sorted(k for k in known if k.split("/")[-1] == str(name).split("/")[-1])
            hint = f" (did you mean {', '.join(close[:3])}?)" if close else ""
            raise BadInput(f"{what}: unknown parameter{hint}; the space has "
                           f"{', '.join(sorted(known))}")
        info = known[name]
        if isinstance(spec, Mapping):
            keys = set(spec)
            if "choices" in keys:
                if keys != {"choices"}:
                    raise BadInput(f"{what}: 'choices' cannot be combined with {sorted(keys - {'choices'})}")
                choices = spec["choices"]
                if not isinstance(choices, list) or not choices:
                    raise BadInput(f"{what}: choices must be a non-empty list")
                if info.kind != "categorical":
                    raise BadInput(f"{what}: is {info.kind}, not categorical; give low/high or a "
                                   "value")
                for choice in choices:
                    if isinstance(choice, list | dict) or not _same_type(choice, info.choices):
                        raise BadInput(f"{what}: choice {choice!r} has the wrong type (the space "
                                       f"offers {list(info.choices)})")
                out[name] = {"choices": list(dict.fromkeys(choices))}
                continue
            if not keys or not keys <= RANGE_KEYS or not {"low", "high"} <= keys:
                raise BadInput(f"{what}: give low and high (optionally step, log), choices, or a "
                               f"single value; got keys {sorted(keys)}")
            if info.kind == "categorical":
                raise BadInput(f"{what}: is categorical ({list(info.choices)}); use choices")
            convert = _integer if info.kind == "int" else _number
            low, high = convert(spec["low"], f"{what}.low"), convert(spec["high"], f"{what}.high")
            if low > high:
                raise BadInput(f"{what}: empty range (low {low:g} > high {high:g})")
            if high < info.low or low > info.high:
                raise BadInput(f"{what}: range [{low}, {high}] lies outside the space's "
                               f"[{info.low:g}, {info.high:g}]")
            entry: dict[str, Any] = {"low": low, "high": high,
                                     "log": bool(spec.get("log", info.log))}
            if not isinstance(spec.get("log", False), bool):
                raise BadInput(f"{what}.log: use true or false")
            if entry["log"] and low <= 0:
                raise BadInput(f"{what}: a log range needs low > 0")
            if "step" in spec and spec["step"] is not None:
                step = convert(spec["step"], f"{what}.step")
                if step <= 0:
                    raise BadInput(f"{what}.step: must be > 0")
                if entry["log"]:
                    raise BadInput(f"{what}: step and log cannot be combined")
                entry["step"] = step
            elif info.step is not None and not entry["log"]:
                entry["step"] = info.step
            if info.kind == "int" and "step" in entry and (high - low) % entry["step"]:
                entry["high"] = low + (high - low) // entry["step"] * entry["step"]
            out[name] = {"range": entry}
            continue
        if isinstance(spec, list):
            raise BadInput(f"{what}: a list is ambiguous; write {{choices: [...]}}")
        if info.kind == "int":
            out[name] = {"fixed": _integer(spec, what)}
        elif info.kind == "float":
            out[name] = {"fixed": float(_number(spec, what))}
        else:
            if not _same_type(spec, info.choices):
                raise BadInput(f"{what}: {spec!r} has the wrong type (the space offers "
                               f"{list(info.choices)})")
            out[name] = {"fixed": spec}
    return out


def read(path: str | Path, space_name: str) -> dict[str, Any]:
    """Parse FILE.yaml (not yet checked against the space); raises :class:`BadInput`."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise BadInput(f"--space-file {path}: cannot read it ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise BadInput(f"--space-file {path}: not a text (UTF-8) file; give the YAML file"
                       ) from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise BadInput(f"--space-file {path}: not valid YAML{at}; fix the syntax") from None
    if not isinstance(doc, Mapping) or not isinstance(doc.get("params"), Mapping) \
            or not doc["params"]:
        raise BadInput(f"--space-file {path}: expected a mapping with a non-empty 'params:' "
                       "mapping (see README, 'Search spaces from files')")
    unknown = set(doc) - {"space", "params"}
    if unknown:
        raise BadInput(f"--space-file {path}: unknown top-level keys {sorted(unknown)}; "
                       "use space and params")
    if doc.get("space") not in (None, space_name):
        raise BadInput(f"--space-file {path} is for space {doc['space']!r}, not {space_name!r}; "
                       "fix --space or the file")
    for name, spec in doc["params"].items():  # what needs no knowledge of the space
        if isinstance(spec, Mapping) and {"low", "high"} <= set(spec):
            what = f"--space-file {path.name}: {name}"
            low, high = _number(spec["low"], f"{what}.low"), _number(spec["high"], f"{what}.high")
            if low > high:
                raise BadInput(f"{what}: empty range (low {low:g} > high {high:g})")
    return {"path": str(path.resolve()), "params": dict(doc["params"])}


# -- applying it ---------------------------------------------------------------------------
class _Narrowed:
    """A trial proxy that applies normalised overrides to each suggest call."""

    def __init__(self, trial: Any, overrides: Mapping[str, dict[str, Any]]):
        self._trial, self._overrides = trial, overrides

    def _range(self, name: str, low: float, high: float, step: Any, log: bool):
        entry = self._overrides[name]["range"]
        new_low, new_high = max(low, entry["low"]), min(high, entry["high"])
        if new_low > new_high:  # the space's own (dynamic) bounds exclude the file's range
            new_low = new_high = high if entry["low"] > high else low
        return new_low, new_high, entry.get("step", step), entry["log"]

    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False):
        override = self._overrides.get(name)
        if override is None:
            return self._trial.suggest_int(name, low, high, step=step, log=log)
        if "fixed" in override:
            return self._trial.suggest_categorical(name, (override["fixed"],))
        low, high, step, log = self._range(name, low, high, step, log)
        if log:
            step = 1
        high = low + (high - low) // step * step
        return self._trial.suggest_int(name, int(low), int(high), step=int(step), log=log)

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False):
        override = self._overrides.get(name)
        if override is None:
            return self._trial.suggest_float(name, low, high, step=step, log=log)
        if "fixed" in override:
            return self._trial.suggest_categorical(name, (override["fixed"],))
        low, high, step, log = self._range(name, low, high, step, log)
        if step is not None and high - low < step:
            step = None
        return self._trial.suggest_float(name, float(low), float(high),
                                         step=None if log else step, log=log)

    def suggest_categorical(self, name: str, choices: Any):
        override = self._overrides.get(name)
        if override is None:
            return self._trial.suggest_categorical(name, choices)
        if "fixed" in override:
            return self._trial.suggest_categorical(name, (override["fixed"],))
        return self._trial.suggest_categorical(name, tuple(override["choices"]))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trial, name)


@dataclasses.dataclass(frozen=True)
class NarrowedSuggest:
    """``space.suggest`` under a space file's overrides (picklable, for Tune's checkpoints)."""

    suggest: Any
    overrides: Mapping[str, dict[str, Any]]

    def __call__(self, trial: Any, info: Any) -> dict[str, Any] | None:
        return self.suggest(_Narrowed(trial, self.overrides), info)


def project_seed(seed: Mapping[str, Any], overrides: Mapping[str, dict[str, Any]]
                 ) -> dict[str, Any]:
    """The seed configuration moved into the narrowed space (see the module doc)."""
    out = dict(seed)
    for name, override in overrides.items():
        if "fixed" in override:
            out[name] = override["fixed"]
        elif name not in out:
            continue
        elif "choices" in override:
            if out[name] not in override["choices"]:
                out[name] = override["choices"][0]
        else:
            entry = override["range"]
            value = min(max(out[name], entry["low"]), entry["high"])
            step = entry.get("step")
            if step and not entry["log"]:
                value = entry["low"] + round((value - entry["low"]) / step) * step
                value = min(value, entry["high"])
            out[name] = int(value) if isinstance(seed[name], int) and not isinstance(
                seed[name], bool) else value
    return out


def narrowed_space(space: Any, info: Any, file: Mapping[str, Any]) -> Any:
    """``space`` with the overrides of a :func:`read` result applied (checked against the
    space's parameters; raises :class:`BadInput`)."""
    where = f"--space-file {Path(file['path']).name}"
    overrides = normalise(file["params"], catalog(space, info), where)
    suggest = NarrowedSuggest(space.suggest, overrides)
    return dataclasses.replace(space, suggest=suggest, seed_config=active_seed(
        suggest, project_seed(space.seed_config, overrides), info))


def active_seed(suggest: Any, seed: Mapping[str, Any], info: Any) -> dict[str, Any]:
    """The parameters a trial of ``seed`` really has: a fixed value can switch parts of the
    space off (fewer stages) or on (a seeded random draw for what the seed never had)."""
    import warnings

    import optuna

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial(dict(seed))
    trial = study.ask()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        constants = suggest(trial, info) or {}
    return {**trial.params, **constants}
