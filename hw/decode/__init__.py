"""Token-Picker decode engine: RTL twin of :mod:`golden.token_picker` (see docs/token_picker.md).

* :mod:`hw.decode.params` - the elaboration parameters (:class:`DecodeParams`) and the constants
  the units share with the golden model.
* :mod:`hw.decode.exp_hw` - combinational ``exp_upper`` / ``exp_lower``, bit for bit the golden's.
* :mod:`hw.decode.prune_core` - :class:`PruneCore`, the bound-and-prune unit of one query head.
* :mod:`hw.decode.axi` - :class:`AxiReadMaster`, a small AXI4 read master (AR/R bursts).
* :mod:`hw.decode.group` - :class:`DecodeGroup`, one KV group's cores and memory side (union
  chunk reads, V rows of the survivors, word counters).
* :mod:`hw.decode.engine` - :class:`DecodeEngine`, the group plus the final softmax, P x V and
  requantization.
* :mod:`hw.decode.accel` - :class:`DecodeAccel`, the engine with its settings and counters in
  AXI4-Lite registers (:func:`hw.decode.accel.register_map`).
"""
