"""Synthesis of hdpgen units: Yosys scripts (``*.ys``), the driver and the report table.

``synth_unit`` / ``synth_all`` (in :mod:`synth.driver`) return JSON-serialisable dicts of
numbers read from Yosys ``stat -json`` and nextpnr ``--report``; :mod:`synth.report` formats
them.  Imported lazily so that ``import synth`` starts no tool.
"""

__all__ = ["synth_unit", "synth_all", "synth_verilog", "format_table"]


def __getattr__(name: str):
    if name in ("synth_unit", "synth_all", "synth_verilog"):
        from . import driver
        return getattr(driver, name)
    if name == "format_table":
        from . import report
        return report.format_table
    raise AttributeError(f"module 'synth' has no attribute {name!r}")
