"""Registry of the generated units: name -> component class (constructed with a config).

Export, cocotb benches and synthesis look units up here by name, so a unit is added in
one place.  Imports are lazy: listing units does not elaborate anything.
"""

import importlib

__all__ = ["UNITS", "ROLES", "DESIGN_CARD", "DESIGN_CARD_LEOPARD", "FRONT_END_UNITS",
           "unit_names", "unit_class", "build_unit", "unit_role", "design_card",
           "not_in_design_message"]

# name -> "module:Class"; every class takes the HDPConfig as its first argument
UNITS: dict[str, str] = {
    "score_unit": "hw.score_unit:ScoreUnit",
    "head_detector": "hw.head_detector:HeadDetector",
    "block_pruner": "hw.block_pruner:BlockPruner",
    "mass_pruner": "hw.mass_pruner:MassPruner",
    "softmax_unit": "hw.softmax_unit:SoftmaxUnit",
    "systolic_array": "hw.systolic:SystolicArray",
    "loader": "hw.stages.loader:Loader",
    "score_stage": "hw.stages.score:ScoreStage",
    "softmax_stage": "hw.stages.softmax:SoftmaxStage",
    "pv_stage": "hw.stages.pv:PVStage",
    "array_arbiter": "hw.stages.arbiter:ArrayArbiter",
    "leopard_engine": "hw.leopard_engine:LeopardEngine",
    "leopard_gather": "hw.stages.leopard_gather:LeopardGather",
    "top": "hw.top:Top",
}

#: the units only one score front end's top instantiates (the others are shared)
FRONT_END_UNITS: dict[str, tuple[str, ...]] = {
    "hdp": ("score_unit", "head_detector", "block_pruner", "mass_pruner", "score_stage"),
    "leopard": ("leopard_engine", "leopard_gather"),
}

#: the five hardware units the design card names -> the unit that plays each part.  The
#: approximation (exact or drop_ff scores) is the operand choice of the score stage, which has
#: the whole score formed on the array, so the score stage is the approximation unit.
DESIGN_CARD: dict[str, str] = {
    "integer score unit": "score_unit",
    "top-k / threshold pruner": "block_pruner",
    "head-pruning detector": "head_detector",
    "approximation unit": "score_stage",
    "systolic array": "systolic_array",
}

#: the same parts in a top generated with the LeOPArd front end: the bit-serial engine computes
#: every score (exactly, so it is the score unit) and prunes it against the threshold by early
#: termination (the threshold pruner); its upper bound on the unread bits is the approximation
#: it decides on.  LeOPArd prunes entries, not heads: there is no head detector (``None``).
DESIGN_CARD_LEOPARD: dict[str, str | None] = {
    "integer score unit": "leopard_engine",
    "top-k / threshold pruner": "leopard_engine",
    "head-pruning detector": None,
    "approximation unit": "leopard_engine",
    "systolic array": "systolic_array",
}

#: unit name -> its role in the design, shown beside the name in the synthesis table, its
#: JSON summary and the report of ``hdpgen run``.  Every unit of :data:`UNITS` has one.
ROLES: dict[str, str] = {
    "score_unit": "integer score unit",
    "head_detector": "head-pruning detector",
    "block_pruner": "top-k / threshold pruner",
    "mass_pruner": "probability-mass pruner (mass mode: keep blocks up to 1 - eps of the mass)",
    "softmax_unit": "softmax (probabilities of a score row)",
    "systolic_array": "systolic array",
    "loader": "loader (Q, K, V streams into memory)",
    "score_stage": "approximation unit (score stage: exact or drop_ff operands)",
    "softmax_stage": "softmax stage (fine scores through the softmax unit)",
    "pv_stage": "P x V stage (probabilities times V, output stream)",
    "array_arbiter": "array arbiter (score and P x V stages share the array)",
    "leopard_engine": "LeOPArd bit-serial score engine (exact scores, early termination "
                      "below the threshold)",
    "leopard_gather": "LeOPArd gather stage (engine records into gathered keys and score "
                      "tiles)",
    "top": "co-processor top (whole design)",
}


def unit_names(cfg=None) -> list[str]:
    """Names of the units whose module exists in this checkout; with ``cfg``, only those its
    top instantiates (the units of the other score front end, and the mass pruner when
    ``cfg.mass_pruner`` is false, are left out)."""
    other: tuple[str, ...] = ()
    if cfg is not None:
        other = tuple(u for fe, units in FRONT_END_UNITS.items() if fe != cfg.front_end
                      for u in units)
        if not cfg.mass_pruner:
            other += ("mass_pruner",)
    return [n for n, spec in UNITS.items()
            if n not in other and importlib.util.find_spec(spec.split(":")[0]) is not None]


def not_in_design_message(name: str, cfg) -> str:
    """Why unit ``name`` (registered, but not in ``unit_names(cfg)``) is not part of ``cfg``'s
    design, and which units are."""
    if name == "mass_pruner" and cfg.front_end == "hdp" and not cfg.mass_pruner:
        why = "mass_pruner false"
    else:
        why = f"front_end {cfg.front_end}"
    return (f"unit {name!r} is not part of this configuration's design ({why}); "
            f"available: {', '.join(unit_names(cfg)) or 'none'}")


def design_card(cfg=None) -> dict:
    """The design card's five parts -> the unit that plays each in ``cfg``'s top."""
    return DESIGN_CARD_LEOPARD if cfg is not None and cfg.front_end == "leopard" else DESIGN_CARD


def unit_class(name: str):
    if name not in UNITS:
        raise ValueError(f"unit must be one of {', '.join(UNITS)}, not {name!r}")
    modname, clsname = UNITS[name].split(":")
    return getattr(importlib.import_module(modname), clsname)


def build_unit(name: str, cfg):
    return unit_class(name)(cfg)


def unit_role(name: str) -> str:
    """The role of unit ``name`` in the design (``""`` for a name outside :data:`ROLES`)."""
    return ROLES.get(name, "")
