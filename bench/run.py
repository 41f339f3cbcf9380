"""``python -m bench``: measure, print the table, write ``bench/results/<machine>.json``.

Two variants: the ``tiny`` preset on CPU (always), and the full-size
architectures with random weights (SD2.1-base, OpenCLIP-H text tower, ViT-base
face encoder, ModelScope 3D UNet) on CUDA when a GPU is present; with
``--full-size`` and no GPU, one full-size training step per side on CPU.
Everything that is not measured is still written, as null with the reason.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import shlex
import shutil
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .learn import LearnPlan, measure_learn
from .machine import describe, versions
from .report import SECTIONS, Measured, Skip, markdown_table, schema, section, table
from .threed import measure_renderer, measure_threed

RESULTS_DIR = Path(__file__).resolve().parent / "results"
NO_GPU = "no CUDA GPU on this machine: open until run on one"
CPU_FULL_SIZE = "full size on CPU: only learning is measured, one warm-up and one timed step per side (--full-size)"


@dataclass(frozen=True)
class Options:
    quick: bool = False
    full_size: bool = False
    only: tuple[str, ...] = SECTIONS
    out: Path | None = None
    models_dir: Path | None = None
    compile: bool = False
    threed_presets: tuple[str, ...] | None = None
    markdown: Path | None = None


def parse(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and timed steps")
    parser.add_argument(
        "--full-size", action="store_true", help="without a GPU: also time full-size training steps on CPU (slow)"
    )
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--out", type=Path, help="results file (default bench/results/<machine>.json)")
    parser.add_argument(
        "--models-dir", type=Path, help="write the full-size models here and keep them (default: a temporary folder)"
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet in our training step")
    parser.add_argument("--3d-presets", dest="threed_presets", help="comma-separated 3D presets (default: all)")
    parser.add_argument("--markdown", type=Path, help="also write the table as Markdown to this file")
    args = parser.parse_args(argv)
    only = tuple(s.strip() for s in args.only.split(",") if s.strip())
    unknown = set(only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}: choose from {', '.join(SECTIONS)}")
    presets = tuple(p.strip() for p in args.threed_presets.split(",")) if args.threed_presets else None
    return Options(args.quick, args.full_size, only, args.out, args.models_dir, args.compile, presets, args.markdown)


def prepare_face():
    """The input photo, prepared once with the tiny preset (face preparation is not what is timed)."""
    import importlib.util

    from stableidentity.manager import ModelManager

    spec = importlib.util.find_spec("skimage")
    photo = Path(list(spec.submodule_search_locations)[0]) / "data" / "astronaut.png"
    return ModelManager("tiny", device="cpu").face_preparer()(photo)


class Runner:
    """Runs sections, turning a skip or a failure into null metrics with the reason."""

    def __init__(self, options: Options, presets_3d: list[str]):
        self.options, self.units, self.failures = options, schema(presets_3d), []

    def section(self, name: str, measure: Callable[[], Measured] | None, reason: str | None = None) -> dict:
        if measure is None:
            return section(self.units[name], None, reason)
        if name not in self.options.only:
            return section(self.units[name], None, f"not selected (--only {','.join(self.options.only)})")
        print(f"  measuring {name} ...", file=sys.stderr, flush=True)
        try:
            return section(self.units[name], measure())
        except Skip as skip:
            return section(self.units[name], None, str(skip))
        except Exception as error:  # noqa: BLE001 - one broken section must not lose the others' numbers
            traceback.print_exc()
            self.failures.append(f"{name}: {error}")
            return section(self.units[name], None, f"failed: {type(error).__name__}: {str(error)[:200]}")
        finally:
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def variant(
        self, preset: str, manager, sections: dict[str, Callable[[], Measured]], reason: str | None = None
    ) -> dict:
        """One column of the table: every section, measured or null with ``reason``."""
        return {
            "preset": preset,
            "device": None if manager is None else manager.device.type,
            "dtype": None if manager is None else str(manager.dtype).removeprefix("torch."),
            "sections": {name: self.section(name, sections.get(name), reason) for name in SECTIONS},
        }


def measurements(manager, face, device: torch.device, options: Options, config) -> dict[str, Callable[[], Measured]]:
    """The section measurements for one manager, sized for the device and --quick."""
    from .inference import measure_generate, measure_video

    quick, cuda = options.quick, device.type == "cuda"
    if cuda:
        plan = LearnPlan(3, 1, 10) if quick else LearnPlan(5, 3, 25)
    else:
        plan = LearnPlan(1, 1, 2) if quick else LearnPlan(2, 5, 5)
    reps = 1 if quick else 3
    warm3d, timed3d = (2, 3 if quick else 10) if cuda else (1, 1 if quick else 2)
    presets = list(options.threed_presets) if options.threed_presets else None
    return {
        "learn": lambda: measure_learn(manager, face, plan, config),
        "generate": lambda: measure_generate(manager, reps),
        "video": lambda: measure_video(manager, 1 if quick else 2),
        "threed": lambda: measure_threed(manager, warm3d, timed3d, presets),
        "renderer": lambda: measure_renderer(device, 1 if quick else 5),
    }


def quiet() -> None:
    """Keep the table readable: no per-model load reports or progress bars."""
    import diffusers
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()


def run(options: Options, command: str = "python -m bench") -> tuple[dict, list[str]]:
    from stableidentity.manager import ModelManager
    from stableidentity.threed.trainer import load_presets
    from stableidentity.training import TrainingConfig

    from .fullsize import write_full_size

    cpu = torch.device("cpu")
    gpu = torch.device("cuda") if torch.cuda.is_available() else None
    runner = Runner(options, list(load_presets()))
    config = TrainingConfig(compile=options.compile)
    face = prepare_face()

    tiny = ModelManager("tiny", device="cpu")
    variants = {"tiny_cpu": runner.variant("tiny", tiny, measurements(tiny, face, cpu, options, config))}
    del tiny
    gc.collect()

    if gpu is None and not options.full_size:
        reason = NO_GPU + "; --full-size times one CPU training step"
        variants["full_size"] = runner.variant("full-size-random", None, {}, reason)
    else:
        root = options.models_dir or Path(tempfile.mkdtemp(prefix="stableidentity-bench-"))
        try:
            video = gpu is not None and "video" in options.only
            print(f"  writing full-size random-weight models to {root} ...", file=sys.stderr, flush=True)
            preset = write_full_size(root, video=video)
            manager = ModelManager(preset, device=(gpu or cpu).type)
            if gpu is not None:
                sections = measurements(manager, face, gpu, options, config)
                variants["full_size"] = runner.variant(preset.name, manager, sections)
            else:
                one_step = {"learn": lambda: measure_learn(manager, face, LearnPlan(1, 1, 1), config)}
                variants["full_size"] = runner.variant(preset.name, manager, one_step, CPU_FULL_SIZE + "; " + NO_GPU)
            del manager
        finally:
            if options.models_dir is None:
                shutil.rmtree(root, ignore_errors=True)

    device = gpu or cpu
    results = {
        "schema": 1,
        "machine": describe(device),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
        "device": device.type,
        "command": command,
        "options": {"quick": options.quick, "full_size": options.full_size, "only": list(options.only),
                    "compile": options.compile, "threed_presets": options.threed_presets},
        "threed_presets": list(load_presets()),
        "variants": variants,
        "failures": runner.failures,
    }
    return results, runner.failures


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    options = parse(argv)
    quiet()
    results, failures = run(options, shlex.join(["python", "-m", "bench", *argv]))
    out = options.out or RESULTS_DIR / f"{results['machine']['slug']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"StableIdentity benchmarks on {results['machine']['description']}, {results['date']}")
    print(table(results))
    print(f"\nwritten: {out}")
    if options.markdown is not None:
        options.markdown.write_text(markdown_table(results) + "\n")
    for failure in failures:
        print(f"FAILED {failure}", file=sys.stderr)
    return 1 if failures else 0
