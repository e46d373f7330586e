"""A recipe's settings: its YAML file, then command-line overrides, then ``KEY=VALUE`` settings."""

from __future__ import annotations

import argparse
import math
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import yaml

Config = TypeVar("Config")


def load_recipe(cls: type[Config], path: str | Path, settings: list[str] = (), **overrides) -> Config:
    """The dataclass ``cls`` from ``path``; ``overrides`` (None: keep) and then ``settings`` win. Dotted
    setting keys reach into nested dicts (``encoder.xscaling=true``); values are YAML."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    data.update({k: v for k, v in overrides.items() if v is not None})
    for setting in settings:
        key, sep, value = setting.partition("=")
        if not sep:
            raise ValueError(f"--set {setting!r}: expected KEY=VALUE, e.g. lr=3e-4 or encoder.xscaling=true")
        *parents, leaf = key.split(".")
        target = data
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = yaml.safe_load(value)
    unknown = set(data) - set(cls.__dataclass_fields__)
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}; accepted: {sorted(cls.__dataclass_fields__)}")
    return cls(**{key: _as_declared(cls, key, value) for key, value in data.items()})


def _as_declared(cls: type, key: str, value: object) -> object:
    """YAML reads ``2e-4`` (no dot) as a string; a key declared ``float`` (or ``float | None``) takes it as the
    number it means, and a key declared ``int`` a string such as ``4e3`` that is a whole number."""
    if not isinstance(value, str):
        return value
    try:
        declared = typing.get_type_hints(cls)[key]
    except NameError:  # an annotation this module cannot resolve: leave the value to the dataclass
        return value
    kinds = set(typing.get_args(declared)) or {declared}
    number = float if float in kinds else int if int in kinds else None
    if number is None:
        return value
    try:
        parsed = float(value)
        if number is int and not parsed.is_integer():
            raise ValueError(value)
    except ValueError:
        raise ValueError(f"{key}={value!r}: expected {'a whole number' if number is int else 'a number'} "
                         f"(e.g. {'4000' if number is int else '3e-4 or 0.0003'})") from None
    return number(parsed)


def warmup_cosine(step: int, lr: float, warmup_steps: int, total_steps: int, min_lr: float) -> float:
    """Linear warm-up to ``lr``, then a cosine decay to ``min_lr`` at ``total_steps``."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))


def recipe_main(prog: str, description: str, cls: type[Config], run: Callable[[Config], object],
                argv: list[str] | None, example: str) -> int:
    """``speech train NAME --config YAML [--set KEY=VALUE ...]``: a bad recipe ends in one line and status 2."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", required=True, help=f"YAML recipe, e.g. {example}")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="any recipe key, value in YAML")
    args = parser.parse_args(argv)
    try:
        cfg = load_recipe(cls, args.config, args.set)
    except (OSError, ValueError, TypeError) as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return 2
    run(cfg)
    return 0


def save_checkpoint(path: Path, weights: dict, optim, step: int, epoch: int, history: list) -> None:
    """``ckpt.pt`` for resuming in a later device call; written aside and renamed, so a call killed while
    writing leaves the previous checkpoint whole."""
    import torch

    partial = path.with_suffix(".tmp")
    torch.save({"model": weights, "optim": optim.state_dict(), "step": step, "epoch": epoch, "history": history},
               partial)
    partial.replace(path)


def resume_checkpoint(path: Path, optim, device) -> tuple[dict | None, int, int, list]:
    """``(weights, step, epoch, history)`` of ``path`` with ``optim``'s state loaded, or ``(None, 0, 0, [])``
    for a fresh start; the caller loads the weights into its model (whole, or its adapters)."""
    import torch

    if not path.exists():
        return None, 0, 0, []
    saved = torch.load(path, map_location=device, weights_only=False)
    optim.load_state_dict(saved["optim"])
    print(f"resumed at step {saved['step']}, epoch {saved['epoch']}", file=sys.stderr)
    return saved["model"], saved["step"], saved["epoch"], saved["history"]



def write_report(out: Path, report: dict) -> dict:
    """``report.json`` of a training call, and its headline (steps, epoch, time, validation) on stderr."""
    import json

    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: report[k] for k in ("step", "epoch", "seconds_this_call", "validation")}), file=sys.stderr)
    return report
