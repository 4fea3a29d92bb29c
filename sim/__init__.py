"""Simulation, stimulus and the ``hdpgen`` command line (depends on ``hw``, ``golden``, ``synth``)."""
