"""Cycle replay of :class:`hw.softmax_unit.SoftmaxUnit` (control only, no datapath).

The top's cycle model (:mod:`sim.top_cycles`) steps one :class:`SoftmaxReplay` per clock
beside its own stages.  It mirrors the unit's registers that decide *when* a row moves
(ingest, exponent, divider, normalise), so a change to the unit's timing is made here and
in ``hw/softmax_unit.py`` only; ``tests/test_top_cycles.py`` checks the pair against the RTL.

Protocol of a replay step (``p_out`` is always ready in the top):

1. read :attr:`ready` (``s_in.ready``) and :attr:`row_out` (``p_out.valid`` with
   ``payload.last``: a row's last probability leaves) from the current registers;
2. call :meth:`step` with the ``s_in`` beat offered this cycle (``valid``, ``last``): it
   computes every register's next value from the current ones.
"""

__all__ = ["SoftmaxReplay"]


class SoftmaxReplay:
    """Registers of the softmax unit that decide its timing."""

    def __init__(self, cfg):
        self._nq = cfg.recip_width
        # stage A (ingest)
        self.a_full, self.a_idx, self.a_n = False, 0, 0
        # stage B (exponent): row running / done, length, issue counter, 4-deep valid pipe
        self.b_run = self.b_done = False
        self.b_n = self.b_issue = 0
        self.v = [(False, False)] * 4
        # stage D (divider)
        self.d_busy = self.d_done = False
        self.d_n = self.d_cnt = 0
        # stage C (normalise) and the two output registers
        self.c_out = False
        self.c_n = self.c_idx = 0
        self.o1_valid = self.o1_last = False
        self.out_valid = self.out_last = False

    @property
    def ready(self) -> bool:
        """``s_in.ready`` this cycle."""
        return not self.a_full

    @property
    def row_out(self) -> bool:
        """A row's last probability is on ``p_out`` this cycle."""
        return self.out_valid and self.out_last

    def step(self, in_valid: bool, in_last: bool) -> None:
        """Advance one clock with the ``s_in`` beat ``(in_valid, in_last)`` offered."""
        fire = in_valid and not self.a_full
        b_idle = not self.b_run and not self.b_done
        a_to_b = self.a_full and b_idle
        b_to_d = self.b_done and not self.d_busy and not self.d_done
        d_to_c = self.d_done and not self.c_out
        row_out = self.out_valid and self.out_last
        b_issue = self.b_run and self.b_issue < self.b_n
        b_issue_last = self.b_issue == self.b_n - 1
        v3 = self.v[3]
        o_issue = self.c_out and self.c_idx < self.c_n
        o_issue_last = self.c_idx == self.c_n - 1
        # stage A
        if fire:
            self.a_idx += 1
            if in_last:
                self.a_full, self.a_n = True, self.a_idx
        if a_to_b:
            self.b_run, self.b_n, self.b_issue = True, self.a_n, 0
            self.a_full, self.a_idx = False, 0
        # stage B
        if b_issue:
            self.b_issue += 1
        self.v = [(b_issue, b_issue_last)] + self.v[:3]
        if v3[0] and v3[1]:
            self.b_run, self.b_done = False, True
        # stage D
        if b_to_d:
            self.b_done, self.d_busy, self.d_n, self.d_cnt = False, True, self.b_n, self._nq
        elif self.d_busy:
            self.d_cnt -= 1
            if self.d_cnt == 0:
                self.d_busy, self.d_done = False, True
        # stage C
        if d_to_c:
            self.d_done, self.c_out, self.c_n, self.c_idx = False, True, self.d_n, 0
        self.out_valid, self.out_last = self.o1_valid, self.o1_last
        self.o1_valid, self.o1_last = o_issue, o_issue_last
        if o_issue:
            self.c_idx += 1
        if row_out:
            self.c_out = False
