"""Simulation: stimulus from the golden model, cocotb benches, drivers and monitors, the
simulator runner and the cycle models (depends on ``hw`` and ``golden`` only)."""
