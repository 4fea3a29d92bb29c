"""What a cocotb bench learns from the runner (``sim.runner.run_cocotb``): environment variables.

``HDPGEN_UNIT_JSON``
    Absolute path of the ``<unit>.json`` written beside the exported Verilog; it holds the
    whole configuration.  Benches call :func:`load_config` and never fall back to defaults.
``HDPGEN_SEED``
    Base random seed for stimulus and stall patterns (default 1).
``HDPGEN_STALL``
    Stall probability for sources and sinks (default: the bench's own choice).

Extra ``extra_env`` entries given to ``run_cocotb`` are readable with :func:`env_int`,
:func:`env_float` and :func:`env_str`.
"""

import json
import os
from pathlib import Path
from typing import Any

from hw.config import HDPConfig

__all__ = ["UNIT_JSON_VAR", "SEED_VAR", "STALL_VAR", "load_unit_json", "load_config",
           "env_int", "env_float", "env_str", "seed", "stall"]

UNIT_JSON_VAR = "HDPGEN_UNIT_JSON"
SEED_VAR = "HDPGEN_SEED"
STALL_VAR = "HDPGEN_STALL"


def load_unit_json() -> dict[str, Any]:
    """The exported unit's JSON (``unit``, ``config``, ``ports``, ``versions``).

    Raises ``RuntimeError`` if ``HDPGEN_UNIT_JSON`` is unset or unreadable: a bench must not
    run with a configuration it guessed.
    """
    path = os.environ.get(UNIT_JSON_VAR)
    if not path:
        raise RuntimeError(f"{UNIT_JSON_VAR} is not set: run benches through sim.runner.run_cocotb")
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RuntimeError(f"cannot read {UNIT_JSON_VAR}={path}: {exc}") from None


def load_config() -> HDPConfig:
    """The configuration the DUT was generated with (from :func:`load_unit_json`)."""
    return HDPConfig.from_dict(load_unit_json()["config"])


def env_str(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if value is None:
        raise RuntimeError(f"environment variable {name} is required")
    return value


def env_int(name: str, default: int | None = None) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        if default is None:
            raise RuntimeError(f"environment variable {name} is required")
        return default
    return int(value, 0)


def env_float(name: str, default: float | None = None) -> float:
    value = os.environ.get(name)
    if value is None or value == "":
        if default is None:
            raise RuntimeError(f"environment variable {name} is required")
        return default
    return float(value)


def seed(default: int = 1) -> int:
    """``HDPGEN_SEED`` (the base seed of stimulus and stalls)."""
    return env_int(SEED_VAR, default)


def stall(default: float = 0.0) -> float:
    """``HDPGEN_STALL`` (stall probability of sources and sinks)."""
    return env_float(STALL_VAR, default)
