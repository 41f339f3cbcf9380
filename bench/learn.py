"""Learning speed: our training step against the reference step, in the same run, on the same batches.

Both sides draw their batches from generators with the same seed, so step k of
each sees the same augmented view, timestep, noise and caption. Timed blocks
alternate (ours, reference, ours, ...) so a machine that gets busier or quieter
during the run affects both sides alike; each side's step time is the median of
its blocks.

Memory per side = the bytes of its models' weights + the largest peak of its
blocks above the memory in use when the block started (activations, workspaces).
Both sides are measured the same way although both are resident at once. On CPU
the peak is the resident set (approximate: allocator caching and library state
count) and warm-up blocks are left out, since a process's first steps also grow
its resident set with one-time library state.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch

from stableidentity import loaders
from stableidentity.training import IdentityLearner, TrainingConfig

from .machine import MB, Clock, MemoryMeter
from .reference import ReferenceStep
from .report import STEPS, Measured

SEED = 0


@dataclass(frozen=True)
class LearnPlan:
    warmup: int  # untimed steps per side first (one-time costs)
    rounds: int  # timed blocks per side
    block: int  # steps per block


def weight_bytes(*modules: torch.nn.Module) -> int:
    tensors = {id(t): t for m in modules for t in (*m.parameters(), *m.buffers())}
    return sum(t.numel() * t.element_size() for t in tensors.values())


class _Side:
    """One side's memory: its weights and the transient peaks of its blocks."""

    def __init__(self, base, face_encoder, count_warmup: bool):
        self.weights = weight_bytes(base.unet, base.vae, base.text_encoder, face_encoder.model)
        self.transient, self.count_warmup = [0], count_warmup

    def block(self, peak: list[int], warmup: bool = False) -> None:
        if self.count_warmup or not warmup:
            self.transient.append(peak[0])

    def peak_mb(self) -> float:
        return (self.weights + max(self.transient)) / MB


def measure_learn(manager, face, plan: LearnPlan, config: TrainingConfig = TrainingConfig()) -> Measured:
    """Time ``plan`` on our learner (the manager's models) and on the reference (fp32 copies)."""
    device = manager.device
    clock, meter = Clock(device), MemoryMeter(device)
    out = Measured(info={
        "memory": "weights + " + meter.kind + " above each block's start"
        + ("" if meter.exact else " (lifetime peak: could not reset it)"),
        "ours": {
            "dtype": str(manager.dtype).removeprefix("torch."),
            "attention": "SDPA (diffusers AttnProcessor2_0, transformers sdpa)",
            "face_vit": "once per photo",
            "channels_last": config.channels_last and device.type == "cuda",
            "compile": config.compile,
            "loss_readback_every": 1 if device.type == "cpu" else config.loss_readback_every,
        },
        "reference": {
            "dtype": "float32",
            "attention": "classic (diffusers AttnProcessor, transformers eager)",
            "face_vit": "every step",
            "loss_readback_every": 1,
        },
        "plan": vars(plan),
    })

    # Ours: the manager's models, as the app uses them.
    start = clock.now()
    learner = IdentityLearner(manager.base(), manager.face_encoder(), manager.celeb_space(), config)
    out.info["load_s"] = clock.now() - start
    cuda = device.type == "cuda"
    ours = _Side(learner.base, learner.face_encoder, count_warmup=cuda)
    with meter.above_start() as peak:
        start = clock.now()
        inputs = learner.prepare(face)
        encoder = learner.new_encoder(inputs, SEED)
        optimizer = learner.new_optimizer(encoder)
        out.values["prepare_s"] = clock.now() - start
        generator = torch.Generator().manual_seed(SEED)
        if plan.warmup:
            start = clock.now()
            learner.fit(inputs, encoder, optimizer, generator, plan.warmup)
            out.values["warmup_s"] = clock.now() - start
        else:
            out.reasons["warmup_s"] = "no warm-up in a one-step run"
    ours.block(peak, warmup=True)

    # Reference: fp32 copies of the same models, loaded by the same loaders.
    preset = manager.preset
    reference = ReferenceStep(
        loaders.load_base(preset.base, device, torch.float32),
        loaders.load_face_encoder(preset.face_encoder, device, torch.float32),
        manager.celeb_space(),
        config,
    )
    ref = _Side(reference.base, reference.face_encoder, count_warmup=cuda)
    ref_encoder = learner.new_encoder(inputs, SEED)
    ref_optimizer = reference.new_optimizer(ref_encoder)
    ref_generator = torch.Generator().manual_seed(SEED)
    with meter.above_start() as peak:
        if plan.warmup:
            reference.fit(inputs, face.vit_crop, ref_encoder, ref_optimizer, ref_generator, plan.warmup)
    ref.block(peak, warmup=True)

    ours_times, ref_times, losses = [], [], []
    for _ in range(plan.rounds):
        with meter.above_start() as peak:
            start = clock.now()
            losses += learner.fit(inputs, encoder, optimizer, generator, plan.block)
            ours_times.append((clock.now() - start) / plan.block)
        ours.block(peak)
        with meter.above_start() as peak:
            start = clock.now()
            reference.fit(inputs, face.vit_crop, ref_encoder, ref_optimizer, ref_generator, plan.block)
            ref_times.append((clock.now() - start) / plan.block)
        ref.block(peak)

    step, ref_step = statistics.median(ours_times), statistics.median(ref_times)
    out.values.update(
        step_s=step,
        steps_450_s=STEPS * step,
        learn_450_s=out.values["prepare_s"] + STEPS * step,
        peak_memory_mb=ours.peak_mb(),
        reference_step_s=ref_step,
        reference_steps_450_s=STEPS * ref_step,
        reference_peak_memory_mb=ref.peak_mb(),
        speedup=ref_step / step,
        timed_steps=plan.rounds * plan.block,
    )
    out.info["block_step_s"] = {"ours": ours_times, "reference": ref_times}
    out.info["losses_finite"] = all(torch.isfinite(torch.tensor(losses)).tolist())
    del reference, learner
    return out
