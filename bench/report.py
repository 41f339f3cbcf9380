"""The results' shape: every metric of every section is always present, as a value or null with a reason.

A metric is ``{"value": number | null, "unit": str, "reason": str | null}``. A
section is ``{"info": {...}, "metrics": {name: metric}}``. Keeping absent numbers
as explicit nulls with reasons makes results from different machines comparable
field by field, and makes "not measured here" impossible to mistake for zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

SECTIONS = ("learn", "generate", "video", "threed", "renderer")
STEPS = 450  # the method's training length (DESIGN §1.3)

LEARN = {
    "step_s": "s",  # ours: wall seconds per training step (median of timed blocks)
    "steps_450_s": "s",  # 450 × step_s
    "prepare_s": "s",  # once per photo: face features, tensors, encoder and optimiser
    "learn_450_s": "s",  # prepare_s + steps_450_s: what a user waits for
    "warmup_s": "s",  # the first steps, one-time costs included (autotuning, compilation)
    "peak_memory_mb": "MB",
    "reference_step_s": "s",
    "reference_steps_450_s": "s",
    "reference_peak_memory_mb": "MB",
    "speedup": "x",  # reference_step_s / step_s
    "timed_steps": "steps",  # per side
}
GENERATE = {"batch1_s_per_image": "s", "batch4_s_per_image": "s", "batch4_s_per_call": "s"}
VIDEO = {"frames16_256px_s": "s"}
RENDERER = {
    "forward_gaussian_pixels_per_s": "G*px/s",
    "forward_backward_gaussian_pixels_per_s": "G*px/s",
    "forward_frame_s": "s",
    "forward_backward_frame_s": "s",
}
THREED_PER_PRESET = {"iterations_per_s": "it/s", "projected_run_s": "s", "gaussians": "count", "timed_iterations": "it"}


def threed_metrics(presets: list[str]) -> dict[str, str]:
    return {f"{p}.{name}": unit for p in presets for name, unit in THREED_PER_PRESET.items()}


def schema(threed_presets: list[str]) -> dict[str, dict[str, str]]:
    """Section -> metric -> unit, for every section a results file holds."""
    return {
        "learn": LEARN,
        "generate": GENERATE,
        "video": VIDEO,
        "threed": threed_metrics(threed_presets),
        "renderer": RENDERER,
    }


class Skip(Exception):
    """A section (or the rest of it) cannot be measured here; the message says why."""


@dataclass
class Measured:
    """What a section's measurement returns: numbers it has, reasons for those it lacks, and context."""

    values: dict[str, float | int | None] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    info: dict = field(default_factory=dict)


def section(units: dict[str, str], measured: Measured | None, reason: str | None = None) -> dict:
    """Fill every metric of ``units``: a finite number, or null with a reason."""
    measured = measured or Measured()
    metrics = {}
    for name, unit in units.items():
        value = measured.values.get(name)
        if value is not None and not math.isfinite(value):
            value, why = None, f"not finite ({value})"
        else:
            why = measured.reasons.get(name) or reason or "not measured"
        metrics[name] = {"value": value, "unit": unit, "reason": None if value is not None else why}
    return {"info": measured.info, "metrics": metrics}


def problems(results: dict) -> list[str]:
    """Everything wrong with a results dict's shape (empty when valid)."""
    found = []
    for key in ("machine", "date", "versions", "command", "variants"):
        if key not in results:
            found.append(f"missing '{key}'")
    units = schema(results.get("threed_presets", []))
    for variant_name, variant in results.get("variants", {}).items():
        for key in ("preset", "device", "sections"):
            if key not in variant:
                found.append(f"{variant_name}: missing '{key}'")
        for section_name, expected in units.items():
            metrics = variant.get("sections", {}).get(section_name, {}).get("metrics")
            if metrics is None:
                found.append(f"{variant_name}.{section_name}: missing")
                continue
            for name, unit in expected.items():
                where = f"{variant_name}.{section_name}.{name}"
                metric = metrics.get(name)
                if metric is None:
                    found.append(f"{where}: missing")
                elif metric.get("unit") != unit:
                    found.append(f"{where}: unit {metric.get('unit')!r}, expected {unit!r}")
                elif metric.get("value") is None and not metric.get("reason"):
                    found.append(f"{where}: null without a reason")
                elif metric.get("value") is not None and not isinstance(metric["value"], (int, float)):
                    found.append(f"{where}: value is not a number")
    return found


# --- the printed table -----------------------------------------------------------------------


def _format(value: float | int, unit: str) -> str:
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "MB":
        return f"{value:,.0f} MB"
    if unit == "G*px/s":
        return f"{value:.3g} G*px/s"
    if unit in ("count", "steps", "it"):
        return f"{value:,.0f}" + ("" if unit == "count" else f" {unit}")
    return f"{value:.3g} {unit}"


def _rows(results: dict) -> tuple[list[str], list[list[str]], list[str]]:
    """Headers, one row per metric (one column per variant), and the reasons nulls point to."""
    variants = results["variants"]
    headers = ["section", "metric"] + [f"{name} ({v['device'] or 'not run'})" for name, v in variants.items()]
    rows, reasons = [], []
    for section_name in SECTIONS:
        for name in next(iter(variants.values()))["sections"][section_name]["metrics"]:
            row = [section_name, name]
            for variant in variants.values():
                metric = variant["sections"][section_name]["metrics"][name]
                if metric["value"] is not None:
                    row.append(_format(metric["value"], metric["unit"]))
                    continue
                if metric["reason"] not in reasons:
                    reasons.append(metric["reason"])
                row.append(f"- [{reasons.index(metric['reason']) + 1}]")
            rows.append(row)
    return headers, rows, reasons


def table(results: dict) -> str:
    """A plain-text table; a null shows as ``- [k]``, with reason k listed below."""
    headers, rows, reasons = _rows(results)
    widths = [max(len(r[i]) for r in rows + [headers]) for i in range(len(headers))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines + [""] + [f"[{i}] {reason}" for i, reason in enumerate(reasons, 1)])


def markdown_table(results: dict) -> str:
    """The same table in Markdown, for docs/benchmarks.md."""
    headers, rows, reasons = _rows(results)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines + [""] + [f"[{i}] {reason}  " for i, reason in enumerate(reasons, 1)])
