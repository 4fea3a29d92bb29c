"""Pruning settings as fractions, per-layer calibration files and their application to heads.

A *setting* is ``(mode, value)``:

* ``topk``: ``value`` is ``k_frac`` in (0, 1], a multiple of 2^-8: each block-row keeps
  ``ceil(k_frac_q * n_valid / 256)`` of its valid blocks (``k_frac_q = k_frac * 256``, the
  ``k_frac_q`` register).
* ``threshold``: ``value`` is ``rho`` in [0, 1] (a multiple of 2^-rho_frac).
* ``mass``: ``value`` is ``eps`` in [0, 1), a multiple of 2^-8 (:mod:`golden.mass_pruner`,
  the ``eps_q`` register of the mass pruner).
* ``leopard``: ``value`` is ``leopard_th``, the logit threshold of the LeOPArd front end
  (:mod:`golden.leopard`), a multiple of 1/16 in [-64, 64]: a head keeps the entries with
  ``q . k / sqrt(d) >= leopard_th`` (and its diagonal).  The head runs with
  ``front_end = "leopard"`` (``prune_mode`` off, ``approx`` exact, no head pruning), whatever
  the base configuration's front end.

:func:`apply_setting` is the ONE place where a setting becomes what a head runs with: for
top-k it is the ``k_frac`` register itself, the same for heads of any length.

A *calibration file* (written by ``hdpgen calibrate``, read by ``golden``, ``simulate``,
``run`` and ``eval --calibration``) is a JSON object::

    {"format": "hdpgen-calibration", "version": 1, "mode": "topk", "values": [v0, ..., v5],
     "heads_per_layer": 12, "target_cos": 0.99, "texts": {...}, "achieved": {...},
     "config": {"block_rows": 2, "block_cols": 2, "criterion": "max", "approx": ...}, ...}

Head ``h`` (layer-major, as in every capture) runs with ``values[h // heads_per_layer]``.
:func:`load_calibration` checks everything before any work and names the field, the value and
the rule of any problem.
"""

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from golden.mass_pruner import EPS_FRAC
from hw.config import LEOPARD_TH_LIMIT, LEOPARD_TH_STEP

from .common import CliError

__all__ = ["MODES", "FORMAT", "VERSION", "FRAC_BITS", "STRUCTURE_KEYS", "HeadRule", "Calibration",
           "check_value", "apply_setting", "configured_setting", "load_calibration",
           "calibration_from_dict", "head_rules", "attention", "read_texts", "file_sha256",
           "parse_setting"]

MODES = ("topk", "threshold", "mass", "leopard")
FORMAT = "hdpgen-calibration"
VERSION = 1
#: fraction bits of k_frac and eps (the registers' resolution)
FRAC_BITS = 8
#: configuration keys that change what a value means; a calibration must match them
STRUCTURE_KEYS = ("block_rows", "block_cols", "criterion", "causal")


@dataclass(frozen=True)
class HeadRule:
    """What one head runs with: its configuration (the rule's register in it)."""
    cfg: object


def check_value(mode: str, value, cfg=None) -> float:
    """``value`` as a float when it is valid for ``mode`` (else ValueError naming the rule)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{mode} value must be a number, not {value!r}")
    v = float(value)
    if mode == "topk":
        if not 0 < v <= 1 or v * 256 != round(v * 256):
            raise ValueError(f"topk value k_frac must be in (0, 1] and a multiple of 1/256, "
                             f"not {value!r}")
    elif mode == "threshold":
        frac = cfg.rho_frac if cfg is not None else 8
        if not 0 <= v <= 1 or v * (1 << frac) != round(v * (1 << frac)):
            raise ValueError(f"threshold value rho must be in [0, 1] and a multiple of "
                             f"2**-{frac}, not {value!r}")
    elif mode == "leopard":
        lim, step = LEOPARD_TH_LIMIT, LEOPARD_TH_STEP
        if not -lim <= v <= lim or v / step != round(v / step):
            raise ValueError(f"leopard value leopard_th (a logit) must be in [{-lim:g}, {lim:g}] "
                             f"and a multiple of 1/{round(1 / step)}, not {value!r}")
    else:
        if not 0 <= v < 1 or v * (1 << EPS_FRAC) != round(v * (1 << EPS_FRAC)):
            raise ValueError(f"mass value eps must be in [0, 1) and a multiple of "
                             f"1/{1 << EPS_FRAC}, not {value!r}")
    return v


def apply_setting(cfg, mode: str, value: float, valid_len: int) -> HeadRule:
    """The one function that turns a setting into what a head of ``valid_len`` runs with
    (``valid_len`` is kept for rules that would depend on the length; none does today)."""
    value = check_value(mode, value, cfg)
    if mode == "topk":
        return HeadRule(cfg.replace(prune_mode="topk", k_frac=value))
    if mode == "threshold":
        return HeadRule(cfg.replace(prune_mode="threshold", rho=value))
    if mode == "leopard":
        return HeadRule(cfg.replace(front_end="leopard", prune_mode="off", approx="exact",
                                    head_prune=False, leopard_th=value))
    return HeadRule(cfg.replace(prune_mode="mass", eps=value))


def configured_setting(cfg) -> tuple[str, float] | None:
    """The configuration's own pruning as a setting (None for ``prune_mode = off`` on the HDP
    front end): topk's ``k_frac``, threshold's ``rho``, mass's ``eps``, the LeOPArd front
    end's ``leopard_th``."""
    if getattr(cfg, "front_end", "hdp") == "leopard":
        return "leopard", float(cfg.leopard_th)
    if cfg.prune_mode == "mass":
        return "mass", float(cfg.eps)
    if cfg.prune_mode == "topk":
        return "topk", float(cfg.k_frac)
    if cfg.prune_mode == "threshold":
        return "threshold", float(cfg.rho)
    return None


def parse_setting(text: str, cfg=None) -> tuple[str, float]:
    """``MODE=VALUE`` from the command line (``topk=0.5``, ``threshold=0.25``, ``mass=0.0625``,
    ``leopard=0.5``)."""
    mode, sep, value = text.partition("=")
    mode = mode.strip()
    if not sep or mode not in MODES:
        raise CliError(f"--setting takes MODE=VALUE with MODE one of {', '.join(MODES)}, not "
                       f"{text!r}")
    try:
        v = float(value)
    except ValueError:
        raise CliError(f"--setting {mode}: value must be a number, not {value.strip()!r}") from None
    try:
        return mode, check_value(mode, v, cfg)
    except ValueError as exc:
        raise CliError(f"--setting: {exc}") from None


# ---------------------------------------------------------------------------- files
@dataclass(frozen=True)
class Calibration:
    """A validated calibration file."""
    mode: str
    values: tuple[float, ...]
    heads_per_layer: int
    data: dict
    path: str = ""

    @property
    def n_layers(self) -> int:
        return len(self.values)

    def value_of_head(self, h: int) -> float:
        return self.values[h // self.heads_per_layer]


def calibration_from_dict(d, cfg=None, where: str = "calibration") -> Calibration:
    """Validate a calibration mapping (see the module docstring); ValueError on any problem."""
    if not isinstance(d, dict):
        raise ValueError(f"{where}: must hold a JSON object, not {type(d).__name__}")
    if d.get("format") != FORMAT:
        raise ValueError(f"{where}: field 'format' must be {FORMAT!r}, not {d.get('format')!r}")
    if d.get("version") != VERSION:
        raise ValueError(f"{where}: field 'version' must be {VERSION}, not {d.get('version')!r}")
    mode = d.get("mode")
    if mode not in MODES:
        raise ValueError(f"{where}: field 'mode' must be one of {', '.join(MODES)}, not {mode!r}")
    values = d.get("values")
    if not isinstance(values, list) or not values:
        raise ValueError(f"{where}: field 'values' must be a non-empty list (one value per "
                         f"layer), not {values!r}")
    hpl = d.get("heads_per_layer")
    if isinstance(hpl, bool) or not isinstance(hpl, int) or hpl < 1:
        raise ValueError(f"{where}: field 'heads_per_layer' must be a positive integer, not "
                         f"{hpl!r}")
    out = []
    for i, v in enumerate(values):
        try:
            out.append(check_value(mode, v, cfg))
        except ValueError as exc:
            raise ValueError(f"{where}: values[{i}] (layer {i}): {exc}") from None
    structure = d.get("config") or {}
    if not isinstance(structure, dict):
        raise ValueError(f"{where}: field 'config' must be a JSON object, not "
                         f"{type(structure).__name__}")
    if cfg is not None:
        for key in STRUCTURE_KEYS:
            if key in structure and structure[key] != getattr(cfg, key):
                raise ValueError(f"{where}: calibrated with {key} = {structure[key]!r}, but the "
                                 f"configuration has {key} = {getattr(cfg, key)!r}")
    return Calibration(mode, tuple(out), hpl, d, where)


def load_calibration(path: Path, cfg=None, heads: int | None = None) -> Calibration:
    """Read and validate a calibration file; with ``heads``, the data's head count must be
    ``layers * heads_per_layer``.  Every problem is a one-line :class:`CliError`."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except IsADirectoryError:
        raise CliError(f"--calibration {path}: is a directory, not a JSON file") from None
    except OSError as exc:
        raise CliError(f"--calibration {path}: cannot read ({exc.strerror or exc})") from None
    try:
        d = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CliError(f"--calibration {path}: not a JSON calibration file ({exc})") from None
    try:
        cal = calibration_from_dict(d, cfg, f"--calibration {path}")
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if heads is not None and heads != cal.n_layers * cal.heads_per_layer:
        raise CliError(f"--calibration {path}: has {cal.n_layers} layers x "
                       f"{cal.heads_per_layer} heads = {cal.n_layers * cal.heads_per_layer} "
                       f"heads, but the data has {heads} heads")
    return cal


def head_rules(cfg, cal: Calibration, heads: int, valid_len: int) -> list[HeadRule]:
    """The rule of each of ``heads`` heads: head ``h`` gets its layer's value."""
    return [apply_setting(cfg, cal.mode, cal.value_of_head(h), valid_len) for h in range(heads)]


def attention(q, k, v, cfg, valid_len: int | None, rules: list[HeadRule]) -> dict:
    """:func:`golden.model.attention` with a rule per head (same result dict)."""
    from golden import model
    q, k, v = (np.asarray(a) for a in (q, k, v))
    if len(rules) != q.shape[0]:
        raise ValueError(f"need one rule per head ({q.shape[0]}), not {len(rules)}")
    res = [model.attention_head(q[h], k[h], v[h], r.cfg, valid_len)
           for h, r in enumerate(rules)]
    out_int = np.stack([r.out_int for r in res])
    return {"out_int": out_int,
            "out": (out_int / float(1 << cfg.out_frac)).astype(np.float32),
            "block_keep": np.stack([r.block_keep for r in res]),
            "head_keep": np.array([r.head_keep for r in res], dtype=bool),
            "heads": res, "stats": model.summarize([r.stats for r in res])}


# ---------------------------------------------------------------------------- texts
def read_texts(path: Path) -> list[tuple[int, str]]:
    """``(line number, text)`` for every non-blank line not starting with ``#``."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise CliError(f"{path}: not UTF-8 text (byte at offset {exc.start})") from None
    except IsADirectoryError:
        raise CliError(f"{path}: is a directory, not a text file") from None
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    out = [(i + 1, s.strip()) for i, s in enumerate(lines)
           if s.strip() and not s.lstrip().startswith("#")]
    if not out:
        raise CliError(f"{path} holds no texts (one per line; blank and # lines are skipped)")
    return out


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
