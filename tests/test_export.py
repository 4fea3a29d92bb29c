"""Verilog export: deterministic, lint-clean, JSON that describes the Verilog it sits beside.

Every unit listed by ``hw.units.unit_names()`` (units appear here as their modules land) is
exported with the ``tiny`` and ``odd`` presets, plus the selftest DUT.
"""

import json
import os
import subprocess
import sys

import pytest

from hdpgen.cli import main as cli_main
from hw.config import HDPConfig
from hw.export import EXPORT_CACHE_VAR, LintError, export_verilog, lint_verilog, parse_verilog_ports
from hw.presets import preset
from hw.units import FRONT_END_UNITS, unit_names
from sim.benches.bench_comb_init import CombInitDut
from sim.runner import REPO_ROOT, run_cocotb, simulator_missing
from sim.selftest_dut import SelftestStream

PRESETS = ["tiny", "odd"]


@pytest.fixture(autouse=True)
def no_export_cache(monkeypatch):
    """These tests check the export itself: no session cache answers for it."""
    monkeypatch.delenv(EXPORT_CACHE_VAR, raising=False)


def test_export_cache_gives_the_exported_text_and_keys_on_the_configuration(tmp_path,
                                                                            monkeypatch):
    cfg = preset("tiny")
    plain = export_verilog("head_detector", cfg, tmp_path / "plain")
    monkeypatch.setenv(EXPORT_CACHE_VAR, str(tmp_path / "cache"))
    first = export_verilog("head_detector", cfg, tmp_path / "first")
    (entry,) = (tmp_path / "cache").glob("head_detector-*.json")
    again = export_verilog("head_detector", cfg, tmp_path / "again")
    for p, f, a in zip(plain, first, again):
        assert p.read_bytes() == f.read_bytes() == a.read_bytes()
    # another configuration is another entry; an instance is never cached
    export_verilog("head_detector", cfg.replace(seq_len=2 * cfg.seq_len), tmp_path / "other")
    export_verilog(SelftestStream(cfg), cfg, tmp_path / "inst", name="selftest")
    assert len(list((tmp_path / "cache").iterdir())) == 2
    # the entry is what answers: a changed entry changes the output
    doc = json.loads(entry.read_text())
    doc["verilog"] += "// from the cache\n"
    entry.write_text(json.dumps(doc))
    v, _ = export_verilog("head_detector", cfg, tmp_path / "changed")
    assert v.read_text().endswith("// from the cache\n")


def _needs_verilator():
    reason = simulator_missing("verilator")
    if reason is not None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(reason)
        pytest.skip(reason)


def _export_in_subprocess(unit: str, cfg: HDPConfig, out_dir) -> None:
    # a fresh interpreter with a different hash seed: catches set/dict-order nondeterminism
    code = ("import sys; from hw.export import export_verilog; from hw.config import HDPConfig; "
            "export_verilog(sys.argv[1], HDPConfig.from_json(sys.argv[2]), sys.argv[3])")
    env = dict(os.environ, PYTHONHASHSEED="12345")
    res = subprocess.run([sys.executable, "-c", code, unit, cfg.to_json(), str(out_dir)],
                         cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]


def _check_export(v_path, json_path, name: str, cfg: HDPConfig, tmp_path) -> None:
    v_text = v_path.read_text()
    meta = json.loads(json_path.read_text())
    assert v_path.name == f"{name}.v" and json_path.name == f"{name}.json"
    assert meta["unit"] == name
    assert HDPConfig.from_dict(meta["config"]) == cfg
    assert set(meta["versions"]) >= {"hdpgen", "amaranth", "python"}
    # the top module carries the unit name and its ports are exactly the JSON's
    ports = parse_verilog_ports(v_text)
    assert ports == parse_verilog_ports(v_text, module=name)
    from_json = {p["name"]: (p["direction"], p["width"]) for p in meta["ports"]}
    assert from_json == ports
    assert len(meta["ports"]) == len(from_json), "duplicate port in JSON"
    # nothing that changes between machines or runs
    for text in (v_text, json_path.read_text()):
        assert str(REPO_ROOT) not in text and str(tmp_path) not in text


#: the LeOPArd front end's settings on a preset (its units need them)
LEO = {"front_end": "leopard", "prune_mode": "off", "approx": "exact", "head_prune": False}


@pytest.mark.parametrize("preset_name", PRESETS)
@pytest.mark.parametrize("unit", unit_names() + ["top-leopard"])
def test_unit_export(unit, preset_name, tmp_path):
    cfg = preset(preset_name)
    if unit in FRONT_END_UNITS["leopard"] or unit == "top-leopard":
        cfg, unit = cfg.replace(**LEO, leopard_lanes=3), unit.removesuffix("-leopard")
    v1, j1 = export_verilog(unit, cfg, tmp_path / "a")
    _export_in_subprocess(unit, cfg, tmp_path / "b")
    v2, j2 = tmp_path / "b" / v1.name, tmp_path / "b" / j1.name
    assert v1.read_bytes() == v2.read_bytes(), f"{unit}/{preset_name}: Verilog differs between runs"
    assert j1.read_bytes() == j2.read_bytes(), f"{unit}/{preset_name}: JSON differs between runs"
    _check_export(v1, j1, unit, cfg, tmp_path)
    _needs_verilator()
    lint_verilog(v1)


@pytest.mark.parametrize("preset_name", PRESETS)
@pytest.mark.parametrize("fault", [None, "drop"])
def test_selftest_export(preset_name, fault, tmp_path):
    cfg = preset(preset_name)
    v1, j1 = export_verilog(SelftestStream(cfg, fault=fault), cfg, tmp_path / "a", name="selftest")
    v2, j2 = export_verilog(SelftestStream(cfg, fault=fault), cfg, tmp_path / "b", name="selftest")
    assert v1.read_bytes() == v2.read_bytes() and j1.read_bytes() == j2.read_bytes()
    _check_export(v1, j1, "selftest", cfg, tmp_path)
    _needs_verilator()
    lint_verilog(v1)


def test_export_leaves_no_temporaries(tmp_path):
    cfg = preset("tiny")
    export_verilog(SelftestStream(cfg), cfg, tmp_path, name="selftest")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["selftest.json", "selftest.v"]


def _unused(component):
    component._MustUse__silence = True  # never elaborated on purpose: no UnusedElaboratable
    return component


def test_export_argument_errors(tmp_path):
    cfg = preset("tiny")
    with pytest.raises(ValueError, match="name is required when exporting a component instance"):
        export_verilog(_unused(SelftestStream(cfg)), cfg, tmp_path)
    with pytest.raises(ValueError, match="unit must be one of .*, not 'nope'"):
        export_verilog("nope", cfg, tmp_path)
    with pytest.raises(ValueError, match="name must be a Verilog identifier, not 'a-b'"):
        export_verilog(_unused(SelftestStream(cfg)), cfg, tmp_path, name="a-b")
    with pytest.raises(TypeError, match="cfg must be an HDPConfig"):
        export_verilog(_unused(SelftestStream(cfg)), cfg.to_dict(), tmp_path, name="x")
    assert not list(tmp_path.iterdir())


def test_lint_catches_real_problems(tmp_path):
    """The waivers keep the gate meaningful: a multiply-driven net still fails."""
    _needs_verilator()
    bad = tmp_path / "bad.v"
    bad.write_text("module bad(input a, input b, output y);\n"
                   "  assign y = a;\n  assign y = b;\nendmodule\n")
    with pytest.raises(LintError, match="bad.v"):
        lint_verilog(bad)
    good = tmp_path / "good.v"
    good.write_text("module good(input a, input b, output y);\n  assign y = a & b;\nendmodule\n")
    lint_verilog(good)


# ---------------------------------------------------------------- hdpgen generate
def test_generate_unknown_unit_exits_2(tmp_path, capsys):
    assert cli_main(["generate", "--unit", "nope", "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "unit must be one of" in err and "'nope'" in err
    assert not (tmp_path / "o").exists()


def test_generate_bad_setting_exits_2(tmp_path, capsys):
    names = unit_names()
    if not names:
        pytest.skip("no unit implemented yet")
    assert cli_main(["generate", "--unit", names[0], "--set", "seq_len=0", "-o", str(tmp_path)]) == 2
    assert "seq_len must be" in capsys.readouterr().err


def test_generate_matches_export(tmp_path):
    names = unit_names()
    if not names:
        pytest.skip("no unit implemented yet")
    unit = names[0]
    assert cli_main(["generate", "--unit", unit, "--preset", "odd", "--set", "causal=false",
                     "-o", str(tmp_path / "cli")]) == 0
    cfg = preset("odd").replace(causal=False)
    v, j = export_verilog(unit, cfg, tmp_path / "api")
    assert (tmp_path / "cli" / v.name).read_bytes() == v.read_bytes()
    assert (tmp_path / "cli" / j.name).read_bytes() == j.read_bytes()
    # --config takes the JSON written beside the Verilog
    assert cli_main(["generate", "--unit", unit, "--config", str(j), "-o", str(tmp_path / "cfg")]) == 0
    assert (tmp_path / "cfg" / v.name).read_bytes() == v.read_bytes()


def test_generate_all_is_atomic(tmp_path, monkeypatch):
    """If any unit fails, nothing at all is written."""
    import hdpgen.cmd_generate as gen

    calls = []

    def fake_verilog_text(name, cfg):
        calls.append(name)
        if name == "second":
            raise RuntimeError("elaboration failed")
        return "module first; endmodule\n", {"unit": name}

    monkeypatch.setattr(gen, "unit_names", lambda cfg=None: ["first", "second"])
    monkeypatch.setattr(gen, "verilog_text", fake_verilog_text)
    with pytest.raises(RuntimeError, match="elaboration failed"):
        cli_main(["generate", "--all", "-o", str(tmp_path / "o")])
    assert calls == ["first", "second"]
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------- time-0 initialisation
@pytest.mark.cocotb
def test_comb_outputs_defined_on_icarus(build_dir):
    """Combinational processes whose inputs are registers that never change still run once:
    without ``hw.export.fix_initializers`` Icarus (``-g2012``) leaves their outputs X."""
    reason = simulator_missing("icarus")
    if reason is not None:
        pytest.skip(reason)
    cfg = preset("tiny")
    run = run_cocotb(unit=CombInitDut(cfg), name="comb_init", cfg=cfg,
                     test_module="sim.benches.bench_comb_init", simulator="icarus",
                     build_dir=build_dir)
    assert run.tests == 1
