"""Cycle model of :class:`hw.stages.pv.PVStage` (P)."""

from types import SimpleNamespace

from hw.config import HDPConfig

__all__ = ["PVModel"]


class PVModel:
    """P's state machine, six-stage P x V feeder and registered requantizer; the output is
    always ready."""

    def __init__(self, cfg: HDPConfig, L: int, groups):
        self.R, self.L, self.groups = cfg.array_rows, L, groups   # (nkept, nrows, i0)
        self.nu = -(-cfg.head_dim // cfg.array_cols)
        self.state = "IDLE"
        self.n = self.rows = self.i0 = self.u = self.t = self.out = self.o_r = 0
        self.active = self.p_last = False
        self.p_valid = (False,) * 5      # feeder stages p1 .. p5 (p5 offers the operands)
        self.p_t = (0,) * 4
        self.rq_last = 0                 # tiles whose last result row is in the rq registers

    @property
    def op_valid(self) -> bool:
        return self.p_valid[4]

    @property
    def op_last(self) -> bool:
        return self.p_last

    @property
    def done(self) -> bool:
        """The group's last output row leaves this cycle."""
        return self.state == "SEND" and self.o_r + 1 == self.rows

    @property
    def last(self) -> bool:
        """The group P holds is the head's last."""
        return self.i0 + self.R >= self.L

    def takes(self, m_valid: bool) -> bool:
        """P takes M's descriptor this cycle."""
        return self.state == "IDLE" and m_valid

    def step(self, p_fire: bool, p_res: int, m_valid: bool, m_group: int) -> None:
        s = SimpleNamespace(**self.__dict__)
        if s.state == "IDLE":
            if m_valid:
                self.n, self.rows, self.i0 = self.groups[m_group]
                self.u, self.t, self.active = 0, 0, True
                self.state = "PV"
        elif s.state == "PV":
            if not s.active and not any(s.p_valid) and s.out == 0 \
                    and not (p_fire and s.p_last):
                self.o_r = 0
                self.state = "SEND"
        else:   # SEND, m_axis always ready
            self.o_r = s.o_r + 1
            if s.o_r + 1 == s.rows:
                self.state = "IDLE"
        if not s.p_valid[4] or p_fire:          # feeder advances
            self.p_valid = (s.active,) + s.p_valid[:4]
            self.p_t = (s.t,) + s.p_t[:3]
            self.p_last = s.p_t[3] + 1 == s.n
            if s.active:
                if s.t + 1 == s.n:
                    self.t, self.u = 0, s.u + 1
                    if s.u + 1 == self.nu:
                        self.active = False
                else:
                    self.t = s.t + 1
        # a result row reaches the output buffer a cycle after the array offers it
        self.rq_last = p_res
        self.out = s.out + (1 if p_fire and s.p_last else 0) - s.rq_last
