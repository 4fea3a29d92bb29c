"""Token-Picker decode engine: RTL twin of :mod:`golden.token_picker` (see docs/token_picker.md).

* :mod:`hw.decode.params` - the elaboration parameters (:class:`DecodeParams`) and the per-``sf``
  constants both units share with the golden model.
* :mod:`hw.decode.exp_hw` - combinational ``exp_upper`` / ``exp_lower``, bit for bit the golden's.
* :mod:`hw.decode.prune_core` - :class:`PruneCore`, the bound-and-prune unit of one query head.
* :mod:`hw.decode.fetch` - :class:`AxiReadMaster` (AXI4 AR/R bursts) and :class:`DecodeFetch`,
  the memory side of one KV group (union chunk reads, V rows of the survivors, word counters).
"""
