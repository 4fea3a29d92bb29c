"""Cycle models of the top's stages, one module per stage of :mod:`hw.stages`.

Each class replays the registers of its stage that decide *when* things happen (no
datapath).  :func:`sim.top_cycles.run_phase` steps them together, once per clock:

1. every model's combinational outputs are read from its current registers (``arbitrate``,
   ``done`` and the like);
2. every model's ``step`` computes its next registers from its current ones and those
   outputs.

A change to a stage's timing is made in its ``hw/stages`` file and here, and
``tests/test_top_cycles.py`` checks the pair against the RTL's cycle counter.
"""
