"""ZeroGPU support for Hugging Face Spaces.

On a ZeroGPU Space the process sees a GPU only while a function decorated with
``spaces.GPU`` runs, for at most its ``duration`` seconds (a shorter duration
queues visitors sooner). Decorate the app's GPU entry points with
:func:`gpu_task` and they work there and everywhere else alike::

    @gpu_task(120)
    def learn(photo, steps, seed): ...

    @gpu_task(lambda prompt, steps, num_images: 10 + steps * num_images)  # seconds from the arguments
    def generate(prompt, steps, num_images): ...

A callable duration takes the same arguments as the decorated function, as
``spaces.GPU`` expects. Where the ``spaces`` package is missing (a laptop, a
plain GPU server, CI) the function is returned unchanged. On ZeroGPU, import
this module (which imports ``spaces``) before anything initialises CUDA.
"""

from __future__ import annotations

import math
from typing import Any, Callable, TypeVar

try:  # at import time: on ZeroGPU, `spaces` must come before CUDA is touched
    import spaces
except ImportError:
    spaces = None

F = TypeVar("F", bound=Callable[..., Any])


def gpu_task(duration: int | Callable[..., int] = 60) -> Callable[[F], F]:
    """``spaces.GPU(duration=duration)`` where the ``spaces`` package is installed, else a no-op decorator."""
    if spaces is None:
        return lambda fn: fn
    return spaces.GPU(duration=duration)


def estimate_seconds(fixed: float, per_unit: float, *units: Any, fallback: int = 300) -> int:
    """A duration for ``gpu_task``: ``fixed + per_unit × units multiplied``.

    Units come straight from the request (steps, images, frames...); when one is not
    a number the job will be refused inside anyway, so any duration will do.
    """
    try:
        return int(fixed + per_unit * math.prod(float(u) for u in units))
    except (TypeError, ValueError):
        return fallback
