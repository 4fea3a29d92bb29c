"""A buffered synchronous FIFO whose storage is LUT RAM, for queues read straight into logic.

Amaranth's ``SyncFIFOBuffered`` reads its storage through a synchronous read port, and Yosys's
ECP5 flow puts a deep or wide one into a DP16KD block RAM, whose read data arrives about 5.8 ns
after the clock edge (nextpnr's speed-6 model) and leaves little of a 10 ns period for the logic
behind it.  With ``ram_style = "distributed"`` the same memory becomes LUT RAM (TRELLIS_DPR16X4)
with the read register in fabric flip-flops.  Same ports, same cycle behaviour.
"""

from amaranth.lib.fifo import SyncFIFOBuffered

__all__ = ["LutSyncFIFOBuffered"]


class LutSyncFIFOBuffered(SyncFIFOBuffered):
    """``SyncFIFOBuffered`` with its storage marked for LUT RAM (Yosys's ``ram_style``)."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        if self.depth > 1:   # depth 1 is a plain register, no memory
            m.submodules.storage.attrs["ram_style"] = "distributed"
        return m
