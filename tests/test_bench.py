"""The benchmark harness (bench/) and the reference training step it compares our learner with."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from bench import report
from bench.reference import ReferenceStep
from stableidentity import loaders


@pytest.fixture(scope="module")
def reference(manager):
    """The reference step on its own fp32 copies of the tiny models."""
    preset = manager.preset
    base, face_encoder = loaders.load_base(preset.base), loaders.load_face_encoder(preset.face_encoder)
    return ReferenceStep(base, face_encoder, manager.celeb_space())


@pytest.mark.parametrize("timestep,flipped", [(100, False), (600, True), (601, False), (950, True)])
def test_our_step_and_the_reference_step_optimise_the_same_loss(manager, prepared_face, reference, timestep, flipped):
    """Same batch, same encoder, fp32: same loss to 1e-4 and the same gradient, in both phases."""
    learner = manager.learner()
    inputs = learner.prepare(prepared_face)
    batch = learner.sample_batch(inputs, torch.Generator().manual_seed(timestep))
    batch = dataclasses.replace(batch, timestep=torch.tensor([timestep]), flipped=flipped)
    ours, theirs = learner.new_encoder(inputs, seed=0), learner.new_encoder(inputs, seed=0)

    loss = learner.loss(ours, inputs, batch)
    reference_loss = reference.loss(theirs, prepared_face.vit_crop, batch)
    assert loss.item() == pytest.approx(reference_loss.item(), rel=1e-4, abs=1e-6)

    loss.backward()
    reference_loss.backward()
    for a, b in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-3, atol=1e-4 * b.grad.abs().max().item())


def test_reference_step_runs_classic_attention_in_fp32(reference):
    from diffusers.models.attention_processor import AttnProcessor

    assert all(isinstance(p, AttnProcessor) for p in reference.base.unet.attn_processors.values())
    assert reference.base.text_encoder.config._attn_implementation == "eager"
    assert reference.face_encoder.model.config._attn_implementation == "eager"
    assert reference.base.unet.dtype == torch.float32


def test_harness_runs_on_cpu_and_writes_every_field(tmp_path):
    from bench.run import main

    out, markdown = tmp_path / "results.json", tmp_path / "table.md"
    sections = "learn,threed,renderer"
    args = ["--quick", "--only", sections, "--3d-presets", "smoke", "--out", str(out), "--markdown", str(markdown)]
    assert main(args) == 0

    results = json.loads(out.read_text())
    assert report.problems(results) == []
    assert {"slug", "description", "cpu", "gpu"} <= set(results["machine"])
    assert {"torch", "diffusers", "transformers"} <= set(results["versions"])
    assert results["date"] and results["device"] in ("cpu", "cuda")

    tiny = results["variants"]["tiny_cpu"]["sections"]
    learn = tiny["learn"]["metrics"]
    measured = ("step_s", "steps_450_s", "reference_step_s", "speedup", "peak_memory_mb", "reference_peak_memory_mb")
    for name in measured:
        assert learn[name]["value"] > 0, name
    assert learn["steps_450_s"]["value"] == pytest.approx(450 * learn["step_s"]["value"])
    assert learn["speedup"]["value"] == pytest.approx(learn["reference_step_s"]["value"] / learn["step_s"]["value"])
    assert tiny["threed"]["metrics"]["smoke.iterations_per_s"]["value"] > 0
    assert "not selected" in tiny["threed"]["metrics"]["preview.iterations_per_s"]["reason"]
    assert tiny["renderer"]["metrics"]["forward_gaussian_pixels_per_s"]["value"] > 0
    assert "not selected" in tiny["generate"]["metrics"]["batch1_s_per_image"]["reason"]

    full = results["variants"]["full_size"]["sections"]
    if not torch.cuda.is_available():
        metrics = [m for s in full.values() for m in s["metrics"].values()]
        assert all(m["value"] is None and "no CUDA GPU" in m["reason"] for m in metrics)
    assert "| learn | step_s |" in markdown.read_text()


def test_problems_are_reported_for_missing_or_unexplained_fields():
    units = report.schema(["smoke"])
    measured = report.Measured(values={"step_s": 0.5})
    variant = {
        "preset": "tiny",
        "device": "cpu",
        "sections": {n: report.section(u, measured if n == "learn" else None, "why") for n, u in units.items()},
    }
    results = {"machine": {}, "date": "d", "versions": {}, "command": "c", "threed_presets": ["smoke"]}
    results["variants"] = {"v": variant}
    assert report.problems(results) == []
    assert variant["sections"]["learn"]["metrics"]["speedup"] == {"value": None, "unit": "x", "reason": "why"}

    variant["sections"]["learn"]["metrics"]["speedup"]["reason"] = None
    del variant["sections"]["video"]["metrics"]["frames16_256px_s"]
    assert report.problems(results) == [
        "v.learn.speedup: null without a reason",
        "v.video.frames16_256px_s: missing",
    ]
