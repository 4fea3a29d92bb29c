"""Stimulus and expected vectors from golden/, one generator per unit, shared by the Amaranth
simulator tests and the cocotb benches."""
