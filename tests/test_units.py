"""The unit registry (``hw.units``) against the top: every unit that is exported, tested and
reported is one the top instantiates, and the five hardware units of the design card are named
(with their role) by units the top instantiates."""

from pathlib import Path

import pytest
from amaranth.hdl import Fragment

from hw.presets import preset
from hw.units import (
    DESIGN_CARD,
    DESIGN_CARD_LEOPARD,
    FRONT_END_UNITS,
    ROLES,
    UNITS,
    design_card,
    not_in_design_message,
    unit_class,
    unit_names,
    unit_role,
)

LEO = {"front_end": "leopard", "prune_mode": "off", "approx": "exact", "head_prune": False}

#: the hardware units the user's design card names; reports must name each of them
CARD_ROLES = ("integer score unit", "top-k / threshold pruner", "head-pruning detector",
              "approximation unit", "systolic array")


def _classes_in_top(cfg) -> set[type]:
    from hw.top import Top
    seen: set[type] = set()

    def walk(frag):
        seen.update(type(o) for o in (getattr(frag, "origins", None) or ()))
        for sub, *_ in frag.subfragments:
            walk(sub)
    walk(Fragment.get(Top(cfg), None))
    return seen


@pytest.fixture(scope="module")
def top_classes() -> set[type]:
    """Classes of every elaboratable inside ``hw.top.Top`` on the tiny preset, at any depth
    (the objects each fragment was elaborated from)."""
    return _classes_in_top(preset("tiny"))


@pytest.fixture(scope="module")
def leopard_classes() -> set[type]:
    """The same for the top generated with the LeOPArd front end."""
    return _classes_in_top(preset("tiny").replace(**LEO))


def test_design_card_roles_are_all_named():
    assert set(DESIGN_CARD) == set(CARD_ROLES), sorted(DESIGN_CARD)
    for role, unit in DESIGN_CARD.items():
        assert unit in UNITS, f"{role!r} maps to {unit!r}, not a registered unit"
        assert unit_role(unit).startswith(role), (role, unit, unit_role(unit))
    # the approximation moved into the score stage: its role says so
    assert DESIGN_CARD["approximation unit"] == "score_stage"
    assert "score stage" in ROLES["score_stage"] and "drop_ff" in ROLES["score_stage"]


@pytest.mark.parametrize("role", CARD_ROLES)
def test_design_card_unit_is_in_the_top(role, top_classes):
    unit = DESIGN_CARD.get(role)
    assert unit is not None, f"no unit plays the design card's {role!r}"
    cls = unit_class(unit)
    assert cls in top_classes, f"{role!r} is {unit} ({cls.__name__}), which the top does not instantiate"


def test_every_registered_unit_is_in_the_top_and_has_a_role(top_classes, leopard_classes):
    """The project's rule: hdpgen exports, tests and reports only units the top instantiates
    (the top of the configuration's score front end: ``unit_names(cfg)``)."""
    assert set(ROLES) == set(UNITS), set(ROLES) ^ set(UNITS)
    assert all(ROLES[u] for u in UNITS)
    assert set(unit_names()) == set(UNITS), "a registered unit's module is missing"
    from hw.top import Top
    for cfg, classes in ((preset("tiny"), top_classes),
                         (preset("tiny").replace(**LEO), leopard_classes)):
        for name in unit_names(cfg):
            cls = unit_class(name)
            assert cls is Top or cls in classes, \
                f"{name} ({cls.__name__}) is not instantiated by the {cfg.front_end} top"
        for name in set(UNITS) - set(unit_names(cfg)):
            assert unit_class(name) not in classes, f"{name} is in the top but not listed"
    assert set(FRONT_END_UNITS["leopard"]) & set(unit_names(preset("tiny"))) == set()


def test_a_top_without_the_mass_pruner_lists_no_mass_pruner():
    """``mass_pruner = False``: the top does not instantiate it, so no unit list names it."""
    from hw.mass_pruner import MassPruner
    cfg = preset("tiny").replace(prune_mode="topk", mass_pruner=False)
    assert MassPruner not in _classes_in_top(cfg)
    assert set(unit_names(preset("tiny"))) - set(unit_names(cfg)) == {"mass_pruner"}
    # asking for it says why, in generate and synth alike
    msg = not_in_design_message("mass_pruner", cfg)
    assert msg.startswith("unit 'mass_pruner' is not part of this configuration's design "
                          "(mass_pruner false); available: score_unit, ")
    assert "(front_end leopard)" in not_in_design_message("score_unit",
                                                          preset("tiny").replace(**LEO))
    from synth.driver import _export
    with pytest.raises(ValueError, match=r"\(mass_pruner false\)"):
        _export("mass_pruner", cfg, Path("unused"))


def test_leopard_design_card(leopard_classes):
    """The LeOPArd top's design card: the engine is the score unit, the threshold pruner and
    the approximation unit; there is no head detector."""
    cfg = preset("tiny").replace(**LEO)
    assert design_card(cfg) is DESIGN_CARD_LEOPARD and design_card(preset("tiny")) is DESIGN_CARD
    assert set(DESIGN_CARD_LEOPARD) == set(CARD_ROLES)
    for role, unit in DESIGN_CARD_LEOPARD.items():
        if unit is None:
            assert role == "head-pruning detector"
            continue
        assert unit in unit_names(cfg) and unit_class(unit) in leopard_classes, (role, unit)
