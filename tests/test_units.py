"""The unit registry (``hw.units``) against the top: every unit that is exported, tested and
reported is one the top instantiates, and the five hardware units of the design card are named
(with their role) by units the top instantiates."""

import pytest
from amaranth.hdl import Fragment

from hw.presets import preset
from hw.units import DESIGN_CARD, ROLES, UNITS, unit_class, unit_names, unit_role

#: the hardware units the user's design card names; reports must name each of them
CARD_ROLES = ("integer score unit", "top-k / threshold pruner", "head-pruning detector",
              "approximation unit", "systolic array")


@pytest.fixture(scope="module")
def top_classes() -> set[type]:
    """Classes of every elaboratable inside ``hw.top.Top`` on the tiny preset, at any depth
    (the objects each fragment was elaborated from)."""
    from hw.top import Top
    seen: set[type] = set()

    def walk(frag):
        seen.update(type(o) for o in (getattr(frag, "origins", None) or ()))
        for sub, *_ in frag.subfragments:
            walk(sub)
    walk(Fragment.get(Top(preset("tiny")), None))
    return seen


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


def test_every_registered_unit_is_in_the_top_and_has_a_role(top_classes):
    """The project's rule: hdpgen exports, tests and reports only units the top instantiates."""
    assert set(ROLES) == set(UNITS), set(ROLES) ^ set(UNITS)
    assert all(ROLES[u] for u in UNITS)
    assert set(unit_names()) == set(UNITS), "a registered unit's module is missing"
    from hw.top import Top
    for name in UNITS:
        cls = unit_class(name)
        assert cls is Top or cls in top_classes, f"{name} ({cls.__name__}) is not instantiated by the top"
