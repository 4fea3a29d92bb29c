"""Head-pruning detector: keep or prune a head from its integer importance ``H``.

Golden twin: :func:`golden.pruner.head_keep`.
"""

from amaranth.hdl import Module, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .config import HDPConfig

__all__ = ["HeadDetector"]


class HeadDetector(wiring.Component):
    """Decide whether a head is kept: ``keep = !head_prune | (H >= tau_head)``.

    Golden twin: :func:`golden.pruner.head_keep` (the head is pruned when head pruning is on
    and ``H < tau_head``; ``H == tau_head`` keeps it).  Unsigned comparison, no rounding.

    Latency 1 cycle (``h_in`` handshake -> ``keep_out.valid``); throughput one head per cycle
    (a registered stage whose ``h_in.ready`` is ``!keep_out.valid | keep_out.ready``), measured
    in ``tests/test_head_detector.py``.  ``head_prune`` and ``tau_head`` are sampled in the cycle
    of the ``h_in`` handshake.

    Parameters
    ----------
    cfg : HDPConfig
        The whole configuration; uses ``h_width``.

    Attributes
    ----------
    h_in : In(stream.Signature(unsigned(cfg.h_width)))
        The head importance ``H`` (``ScoreUnit.h_out``).
    head_prune : In(1)
    tau_head : In(cfg.h_width)
    keep_out : Out(stream.Signature(1))
        1 = keep the head.
    """

    def __init__(self, cfg: HDPConfig):
        if not isinstance(cfg, HDPConfig):
            raise TypeError(f"cfg must be an HDPConfig, not {cfg!r}")
        self._cfg = cfg
        super().__init__({
            "h_in": In(stream.Signature(unsigned(cfg.h_width))),
            "head_prune": In(1),
            "tau_head": In(cfg.h_width),
            "keep_out": Out(stream.Signature(1)),
        })

    @property
    def cfg(self) -> HDPConfig:
        return self._cfg

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.h_in.ready.eq(~self.keep_out.valid | self.keep_out.ready)
        with m.If(self.h_in.ready):
            m.d.sync += self.keep_out.valid.eq(self.h_in.valid)
            with m.If(self.h_in.valid):
                m.d.sync += self.keep_out.payload.eq(
                    ~self.head_prune | (self.h_in.payload >= self.tau_head))
        return m
