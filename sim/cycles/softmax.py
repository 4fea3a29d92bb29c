"""Cycle model of :class:`hw.stages.softmax.SoftmaxStage` (M) and its softmax unit."""

from types import SimpleNamespace

from hw.config import HDPConfig
from sim.cycles_softmax import SoftmaxReplay

__all__ = ["SoftmaxStageModel"]


class SoftmaxStageModel:
    """M's state machine, its six-stage feeder and collector, the softmax unit
    (:class:`sim.cycles_softmax.SoftmaxReplay`) and the one-entry descriptor register that
    hands a finished group to P."""

    def __init__(self, cfg: HDPConfig, groups):
        self.groups = groups             # (nkept, nrows) per group
        self.unit = SoftmaxReplay(cfg)
        self.state = "IDLE"
        self.prob_cr = 2
        self.g = -1                      # the group M holds
        self.n = self.rows = self.f_r = self.f_p = self.c_r = 0
        self.f_active = self.s1_valid = self.s1_last = self.s2_valid = self.s2_last = False
        self.s3_valid = self.s3_last = self.s3b_valid = self.s3b_last = False
        self.s4_valid = self.s4_last = False
        self.out_valid = False           # descriptor register to P
        self.out_g = -1

    @property
    def done(self) -> bool:
        """The group's last probability has been written (one-cycle strobe)."""
        return self.state == "RUN" and self.c_r == self.rows

    def step(self, fifo: list[int], fifo_ready: bool, p_done: bool, p_take: bool) -> None:
        s = SimpleNamespace(**{k: v for k, v in self.__dict__.items() if k != "unit"})
        sm_ready = self.unit.ready
        row_out = self.unit.row_out
        done = self.done
        started = False
        if s.state == "IDLE":
            if fifo_ready and s.prob_cr > 0:
                self.g = fifo.pop(0)
                self.n, self.rows = self.groups[self.g]
                self.f_active, self.f_r, self.f_p, self.c_r = True, 0, 0, 0
                self.state = "RUN"
                started = True
        elif done:
            self.state = "IDLE"
        if not s.s4_valid or sm_ready:          # feeder advances
            self.s1_valid, self.s1_last = s.f_active, s.f_active and s.f_p + 1 == s.n
            self.s2_valid, self.s2_last = s.s1_valid, s.s1_last
            self.s3_valid, self.s3_last = s.s2_valid, s.s2_last
            self.s3b_valid, self.s3b_last = s.s3_valid, s.s3_last
            self.s4_valid, self.s4_last = s.s3b_valid, s.s3b_last
            if s.f_active:
                if s.f_p + 1 == s.n:
                    self.f_p, self.f_r = 0, s.f_r + 1
                    if s.f_r + 1 == s.rows:
                        self.f_active = False
                else:
                    self.f_p = s.f_p + 1
            if started:                          # the start's resets take precedence
                self.f_active, self.f_r, self.f_p = True, 0, 0
        if row_out and not started:
            self.c_r = s.c_r + 1
        self.unit.step(s.s4_valid, s.s4_last)
        self.prob_cr = s.prob_cr + p_done - done
        if p_take:
            self.out_valid = False
        if done:
            self.out_valid, self.out_g = True, s.g
