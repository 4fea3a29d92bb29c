"""Cycle replay of :class:`hw.softmax_unit.SoftmaxUnit` (control only, no datapath).

The top's cycle model (:mod:`sim.top_cycles`) steps one :class:`SoftmaxReplay` per clock
beside its own stages.  It mirrors the unit's registers that decide *when* a row moves
(ingest, exponent issue and pipeline, the two row slots, divider, normalise), so a change to
the unit's timing is made here and in ``hw/softmax_unit.py`` only;
``tests/test_top_cycles.py`` checks the pair against the RTL.

Protocol of a replay step (``p_out`` is always ready in the top):

1. read :attr:`ready` (``s_in.ready``) and :attr:`row_out` (``p_out.valid`` with
   ``payload.last``: a row's last probability leaves) from the current registers;
2. call :meth:`step` with the ``s_in`` beat offered this cycle (``valid``, ``last``): it
   computes every register's next value from the current ones.
"""

from hw.softmax_unit import EXP_PIPE, divider_steps

__all__ = ["SoftmaxReplay"]


class SoftmaxReplay:
    """Registers of the softmax unit that decide its timing."""

    def __init__(self, cfg):
        self._nd = divider_steps(cfg)
        # stage A (ingest)
        self.a_full, self.a_idx, self.a_n = False, 0, 0
        # stage B: parity of the next row, the two row slots (busy, done, length), the issue
        # side (running, entries left, its row's parity) and the exponent pipeline, one
        # (valid, last, parity) per register
        self.b_par = 0
        self.sl_busy, self.sl_done, self.sl_n = [False, False], [False, False], [0, 0]
        self.b_run, self.b_left, self.b_rpar = False, 0, 0
        self.pipe = [(False, False, 0)] * EXP_PIPE
        # stage D (divider)
        self.d_par = 0
        self.d_busy = self.d_done = False
        self.d_n = self.d_cnt = 0
        # stage C (normalise) and its output registers o1, o2, o3, p_out: (valid, last) each
        self.c_run, self.c_left = False, 0
        self.out = [(False, False)] * 4

    @property
    def ready(self) -> bool:
        """``s_in.ready`` this cycle."""
        return not self.a_full

    @property
    def row_out(self) -> bool:
        """A row's last probability is on ``p_out`` this cycle."""
        return self.out[3][0] and self.out[3][1]

    def step(self, in_valid: bool, in_last: bool) -> None:
        """Advance one clock with the ``s_in`` beat ``(in_valid, in_last)`` offered."""
        fire = in_valid and not self.a_full
        a_to_b = self.a_full and not self.b_run and not self.sl_busy[self.b_par]
        d_to_c = self.d_done and not self.c_run
        d_free = not self.d_busy and (not self.d_done or d_to_c)
        b_to_d = self.sl_done[self.d_par] and d_free
        v7, last7, par7 = self.pipe[-1]
        issue = (self.b_run, self.b_left == 1, self.b_rpar)
        c_issue = (self.c_run, self.c_left == 1)
        # stage A
        if fire:
            self.a_idx += 1
            if in_last:
                self.a_full, self.a_n = True, self.a_idx
        # stage B: the issue side (a_to_b needs it idle) and the pipeline
        if self.b_run:
            self.b_left -= 1
            if self.b_left == 0:
                self.b_run = False
        if a_to_b:
            p = self.b_par
            self.b_run, self.b_left, self.b_rpar, self.b_par = True, self.a_n, p, 1 - p
            self.sl_busy[p], self.sl_n[p] = True, self.a_n
            self.a_full, self.a_idx = False, 0
        self.pipe = [issue] + self.pipe[:-1]
        if v7 and last7:
            self.sl_done[par7] = True
        # stage D
        if self.d_busy:
            self.d_cnt -= 1
            if self.d_cnt == 0:
                self.d_busy, self.d_done = False, True
        if d_to_c:
            self.d_done = False
            self.c_run, self.c_left = True, self.d_n
        elif c_issue[0]:
            # stage C (p_out always ready: the output registers always advance)
            self.c_left -= 1
            if self.c_left == 0:
                self.c_run = False
        if b_to_d:
            p = self.d_par
            self.sl_busy[p] = self.sl_done[p] = False
            self.d_busy, self.d_par, self.d_n, self.d_cnt = True, 1 - p, self.sl_n[p], self._nd
        self.out = [c_issue] + self.out[:-1]
