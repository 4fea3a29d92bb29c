"""The stages the co-processor top (:class:`hw.top.Top`) is composed of.

Each stage is a :class:`~amaranth.lib.wiring.Component` in its own file; the top joins them
with ``wiring.connect``, and owns the memories between them (stages reach them through
``lib.memory`` read and write port interfaces):

* :class:`~hw.stages.loader.Loader`: the input rows into the K, Q, V memories at full rate, K
  to the integer pass, Q to it from the Q memory at its own pace;
* :class:`~hw.stages.score.ScoreStage` (S): a row group's kept keys gathered into score tiles
  on the array, the scores into the fine-score memory;
* :class:`~hw.stages.softmax.SoftmaxStage` (M): the group's scores through the softmax unit,
  the probabilities into the probability memories;
* :class:`~hw.stages.pv.PVStage` (P): P x V tiles on the array, requantized and sent;
* :class:`~hw.stages.arbiter.ArrayArbiter`: S and P share the array tile by tile.

Row groups travel S -> M -> P as descriptors (:func:`~hw.stages.common.group_layout`) on
streams; a stage frees a group's memory bank with a one-cycle ``done`` strobe that the
stages writing that bank count as credits.
"""
