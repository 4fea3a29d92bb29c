"""The ``hdpgen`` command as a whole: top-level help and version, and the destination checks of
``generate`` and ``synth`` (each regression test is named for the defect it pins)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hdpgen import __version__
from hdpgen.cli import COMMANDS, main

HDPGEN = Path(sys.executable).with_name("hdpgen")


def _run(capsys, *argv) -> tuple[int, str, str]:
    try:
        rc = main(list(argv))
    except SystemExit as exc:  # argparse: --help, --version, usage errors
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def test_defect12_top_level_help_lists_every_command_without_backquotes(capsys):
    rc, out, _ = _run(capsys, "--help")
    assert rc == 0
    assert "`" not in out
    for name in COMMANDS:
        assert f"\n    {name} " in out, f"{name} missing from the top-level help"
    for name in ("dse", "capture", "eval"):
        assert name in out


def test_defect12_version_option(capsys):
    rc, out, _ = _run(capsys, "--version")
    assert rc == 0
    assert out.strip() == f"hdpgen {__version__}"
    assert __version__ != "0+unknown"


@pytest.mark.skipif(not HDPGEN.exists(), reason="the console script is not installed beside Python")
def test_console_script_version():
    res = subprocess.run([str(HDPGEN), "--version"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.startswith("hdpgen ")


def _one_line_error(rc: int, err: str, command: str, *words: str) -> None:
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"hdpgen {command}: error: "), err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], err


def test_defect4_generate_into_readonly_folder(capsys, readonly_dir):
    rc, _, err = _run(capsys, "generate", "--unit", "head_detector", "--preset", "tiny",
                      "-o", str(readonly_dir))
    _one_line_error(rc, err, "generate", str(readonly_dir), "not writable")
    assert os.listdir(readonly_dir) == []


def test_defect4_generate_below_readonly_folder(capsys, readonly_dir):
    rc, _, err = _run(capsys, "generate", "--unit", "head_detector", "--preset", "tiny",
                      "-o", str(readonly_dir / "sub"))
    _one_line_error(rc, err, "generate", "not writable")


def test_defect4_generate_onto_existing_file(capsys, tmp_path):
    target = tmp_path / "not_a_dir.v"
    target.write_text("keep me\n")
    rc, _, err = _run(capsys, "generate", "--unit", "head_detector", "--preset", "tiny",
                      "-o", str(target))
    _one_line_error(rc, err, "generate", str(target), "not a directory")
    assert target.read_text() == "keep me\n"


def test_defect4_generate_where_an_output_is_a_directory(capsys, tmp_path):
    (tmp_path / "head_detector.json").mkdir()
    rc, _, err = _run(capsys, "generate", "--unit", "head_detector", "--preset", "tiny",
                      "-o", str(tmp_path))
    _one_line_error(rc, err, "generate", "head_detector.json", "is a directory")
    assert not (tmp_path / "head_detector.v").exists()


def test_generate_writes_into_a_new_folder(capsys, tmp_path):
    rc, out, err = _run(capsys, "generate", "--unit", "head_detector", "--preset", "tiny",
                        "-o", str(tmp_path / "a" / "b"))
    assert rc == 0, err
    assert (tmp_path / "a" / "b" / "head_detector.v").is_file()


def test_defect4_synth_into_readonly_folder(capsys, readonly_dir):
    rc, _, err = _run(capsys, "synth", "--unit", "head_detector", "--preset", "tiny",
                      "--targets", "generic", "--no-fmax", "-o", str(readonly_dir / "synth"))
    _one_line_error(rc, err, "synth", "not writable")
    assert os.listdir(readonly_dir) == []


def test_defect4_synth_onto_existing_file(capsys, tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    rc, _, err = _run(capsys, "synth", "--unit", "head_detector", "--preset", "tiny",
                      "--targets", "generic", "--no-fmax", "-o", str(target))
    _one_line_error(rc, err, "synth", "not a directory")


def test_synth_rejects_a_dsp_width_below_one(capsys, tmp_path):
    rc, _, err = _run(capsys, "synth", "--unit", "head_detector", "--preset", "tiny",
                      "--ecp5-dsp-min-width", "0", "-o", str(tmp_path / "s"))
    _one_line_error(rc, err, "synth", "--ecp5-dsp-min-width", "not 0")
    assert not (tmp_path / "s").exists()


def test_synth_rejects_a_negative_seed(capsys, tmp_path):
    rc, _, err = _run(capsys, "synth", "--unit", "head_detector", "--preset", "tiny",
                      "--seed", "-1", "-o", str(tmp_path / "s"))
    _one_line_error(rc, err, "synth", "--seed", "not -1")
    assert not (tmp_path / "s").exists()
