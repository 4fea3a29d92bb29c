"""cocotb bench modules, one per unit (``bench_<unit>.py``), run through ``sim.runner.run_cocotb``."""
