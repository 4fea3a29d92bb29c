"""The main job's golden, RTL and comparison stages for a top generated with the LeOPArd front
end (``front_end = "leopard"``), shared by ``hdpgen run`` and ``bench/leopard_top.py``.

Three runs of the same RTL top on the same heads give the figures LeOPArd is judged by:

* *as run*: each head's threshold, early termination on;
* *no ET*: the same thresholds with early termination off (register ``no_et``): every entry
  reads all ``qk_bits`` bits, the same entries are kept -- the bit-serial baseline;
* *dense*: no pruning and no early termination (the lowest threshold): every entry is kept.

And the HDP front end on the same data, through the HDP top's exact cycle model
(:func:`sim.top_cycles.head_cycles`, equal to that top's cycle counter): the same sizes with
the default preset's pruning (the probability-mass rule) and with none (dense).
"""

import numpy as np

__all__ = ["leopard_golden", "leopard_rtl", "hdp_cycles", "DENSE_TH", "hdp_twin"]

#: the lowest threshold: every entry reaches it, so nothing is pruned
DENSE_TH = -64.0


def _head_cfgs(cfg, heads: int, head_cfgs) -> list:
    return list(head_cfgs[:heads]) if head_cfgs is not None else [cfg] * heads


def leopard_golden(q, k, v, cfg, valid_len=None, head_cfgs=None) -> dict:
    """Golden model of every head of float (H, N, d) inputs (``head_cfgs``: one configuration
    per head, e.g. per-layer thresholds), with its accuracy against float attention, unpruned
    (the lowest threshold) for comparison, and the front end's statistics summed over heads."""
    from golden.leopard import config_threshold, leopard_head_int, summarize
    from golden.model import quantize_qkv
    from golden.reference import float_attention

    from .accuracy import compare_outputs, per_head_rel_rms
    heads = q.shape[0]
    q_q, k_q, v_q = quantize_qkv(q, k, v, cfg)
    n = q_q.shape[1]
    vl = n if valid_len is None else int(valid_len)
    cfgs = _head_cfgs(cfg, heads, head_cfgs)
    res = [leopard_head_int(q_q[h], k_q[h], v_q[h], c, config_threshold(c), vl)
           for h, c in enumerate(cfgs)]
    dense_cfg = cfg.replace(leopard_th=DENSE_TH)
    dense = [leopard_head_int(q_q[h], k_q[h], v_q[h], dense_cfg, config_threshold(dense_cfg), vl)
             for h in range(heads)]
    scale = float(1 << cfg.out_frac)
    out = np.stack([r.out_int for r in res]) / scale
    out_dense = np.stack([r.out_int for r in dense]) / scale
    ref = float_attention(q, k, v, vl, cfg.causal)
    st = summarize([r.stats for r in res])
    return {"heads": res, "dense_heads": dense, "stats": st, "q_q": q_q, "k_q": k_q, "v_q": v_q,
            "valid_len": vl, "head_cfgs": cfgs,
            "accuracy": {"LeOPArd (as run)": compare_outputs(out, ref, vl),
                         "unpruned (exact scores)": compare_outputs(out_dense, ref, vl)},
            "per_head": {"kept_entry_fraction": [r.stats["kept_fraction"] for r in res],
                         "bits_ratio": [r.stats["bits_ratio"] for r in res],
                         "rel_rms_pruned": per_head_rel_rms(out, ref, vl),
                         "rel_rms_unpruned": per_head_rel_rms(out_dense, ref, vl)}}


def leopard_rtl(gold: dict, cfg, simulator: str, build_dir, progress=None) -> dict:
    """The three RTL runs (as run, no ET, dense) of the heads in ``gold``
    (:func:`leopard_golden`) on one cached build, each output compared whole with golden
    (``heads``, or ``dense_heads`` for the dense run).
    Returns per-head cycles, engine cycles, bits read and kept entries of each run, and the
    heads that differ from golden in any bit."""
    from sim.top_run import simulate
    q_q, k_q, v_q, vl = gold["q_q"], gold["k_q"], gold["v_q"], gold["valid_len"]
    heads = q_q.shape[0]
    dense_cfg = cfg.replace(leopard_th=DENSE_TH)
    runs = {"as_run": (gold["head_cfgs"], False), "no_et": (gold["head_cfgs"], True),
            "dense": ([dense_cfg] * heads, True)}
    out: dict = {"simulator": simulator, "heads": heads, "mismatched_heads": 0,
                 "first_mismatch": None}
    for label, (cfgs, no_et) in runs.items():
        def tick(done, total, label=label):
            if progress:
                progress(done, total, f"heads ({label.replace('_', ' ')})")
        res, _ = simulate(cfg, q_q, k_q, v_q, vl, simulator, build_dir, progress=tick,
                          head_cfgs=cfgs, no_et=no_et)
        for h in range(heads):
            g = gold["dense_heads" if label == "dense" else "heads"][h]
            bits = g.stats["bits_dense"] if no_et else g.stats["bits_processed"]
            same = (np.array_equal(res["out_int"][h, :vl], g.out_int[:vl])
                    and int(res["kept_entries"][h]) == g.stats["kept_entries"]
                    and int(res["bits_read"][h]) == bits)
            if not same:
                out["mismatched_heads"] += 1
                out["first_mismatch"] = out["first_mismatch"] or f"{label} head {h}"
        out[label] = {key: [int(x) for x in res[key]]
                      for key in ("cycles", "fe_cycles", "bits_read", "kept_entries",
                                  "array_cycles", "kept_keys")}
    out["bit_exact"] = out["mismatched_heads"] == 0
    return out


def hdp_twin(cfg):
    """The HDP front end with the same sizes, pruned as the default preset prunes."""
    from hw.presets import preset
    d = preset("default")
    return cfg.replace(front_end="hdp", prune_mode=d.prune_mode, eps=d.eps, k_frac=d.k_frac,
                       approx=d.approx, head_prune=d.head_prune)


def hdp_cycles(gold: dict, cfg) -> dict:
    """Per-head cycles of the HDP top (:func:`hdp_twin`) on the same quantized heads, pruned
    and dense, from its exact cycle model; and its kept entry fraction."""
    from golden.model import attention_head_int
    from sim.top_cycles import head_cycles
    twin = hdp_twin(cfg)
    dense = twin.replace(prune_mode="off", head_prune=False)
    q_q, k_q, v_q, vl = gold["q_q"], gold["k_q"], gold["v_q"], gold["valid_len"]
    pruned_c, dense_c, kept, valid = [], [], 0, 0
    for h in range(q_q.shape[0]):
        g = attention_head_int(q_q[h], k_q[h], v_q[h], twin, vl)
        pruned_c.append(head_cycles(twin, g, dense=False))
        gd = attention_head_int(q_q[h], k_q[h], v_q[h], dense, vl)
        dense_c.append(head_cycles(dense, gd, dense=True))
        kept += g.stats["kept_entries"]
        valid += g.stats["valid_pairs"]
    return {"config": {k: getattr(twin, k) for k in ("prune_mode", "eps", "approx")},
            "cycles": pruned_c, "cycles_dense": dense_c,
            "kept_entry_fraction": kept / max(1, valid)}
