"""Board self-test: a harness that runs one stored head through :class:`hw.top.Top` and
reports PASS/FAIL over a UART (:mod:`hw.board.selftest`), its golden vectors
(:mod:`hw.board.vectors`) and the ULX3S wrapper (:mod:`hw.board.ulx3s`)."""
