"""Amaranth components of the hdpgen accelerator (``hw.config`` imports no Amaranth)."""
