"""Registry of the generated units: name -> component class (constructed with a config).

Export, cocotb benches and synthesis look units up here by name, so a unit is added in
one place.  Imports are lazy: listing units does not elaborate anything.
"""

import importlib

__all__ = ["UNITS", "unit_names", "unit_class", "build_unit"]

# name -> "module:Class"; every class takes the HDPConfig as its first argument
UNITS: dict[str, str] = {
    "score_unit": "hw.score_unit:ScoreUnit",
    "head_detector": "hw.head_detector:HeadDetector",
    "block_pruner": "hw.block_pruner:BlockPruner",
    "softmax_unit": "hw.softmax_unit:SoftmaxUnit",
    "systolic_array": "hw.systolic:SystolicArray",
    "loader": "hw.stages.loader:Loader",
    "score_stage": "hw.stages.score:ScoreStage",
    "softmax_stage": "hw.stages.softmax:SoftmaxStage",
    "pv_stage": "hw.stages.pv:PVStage",
    "array_arbiter": "hw.stages.arbiter:ArrayArbiter",
    "top": "hw.top:Top",
}


def unit_names() -> list[str]:
    """Names of the units whose module exists in this checkout."""
    return [n for n, spec in UNITS.items()
            if importlib.util.find_spec(spec.split(":")[0]) is not None]


def unit_class(name: str):
    if name not in UNITS:
        raise ValueError(f"unit must be one of {', '.join(UNITS)}, not {name!r}")
    modname, clsname = UNITS[name].split(":")
    return getattr(importlib.import_module(modname), clsname)


def build_unit(name: str, cfg):
    return unit_class(name)(cfg)
