"""Writing frames as browser-playable video (H.264 MP4, yuv420p) or GIF, with imageio."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import imageio.v2 as imageio
import numpy as np

from .errors import InvalidInputError


def as_uint8(frames: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray]:
    """Frames as HxWx3 uint8 arrays (floats are taken to be in [0, 1])."""
    out = []
    for frame in frames:
        frame = np.asarray(frame)
        if frame.dtype != np.uint8:
            frame = (np.clip(frame, 0.0, 1.0) * 255).round().astype(np.uint8)
        out.append(frame[..., :3])
    return out


def write_video(
    frames: Sequence[np.ndarray] | np.ndarray,
    path: str | Path,
    fps: float,
    on_frame: Callable[[int, int], None] | None = None,
) -> Path:
    """Write ``frames`` to ``path``: ``.mp4`` (H.264, yuv420p: plays in browsers) or ``.gif``."""
    path = Path(path)
    frames = as_uint8(frames)
    if not frames:
        raise InvalidInputError("there are no frames to write")
    if not 1 <= fps <= 60:
        raise InvalidInputError(f"fps must be between 1 and 60, got {fps}")
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".mp4":
        # yuv420p needs even sides; macro_block_size=2 pads odd sizes instead of resizing to 16s.
        writer = imageio.get_writer(
            path, format="FFMPEG", fps=fps, codec="libx264", pixelformat="yuv420p", macro_block_size=2, quality=8,
            ffmpeg_params=["-movflags", "+faststart"],  # the index first: browsers start playing at once
            ffmpeg_log_level="error",
        )
    elif suffix == ".gif":
        writer = imageio.get_writer(path, mode="I", duration=1000 / fps, loop=0)
    else:
        raise InvalidInputError(f"video files must end in .mp4 or .gif, got {path.name}")
    with writer:
        for i, frame in enumerate(frames, 1):
            writer.append_data(frame)
            if on_frame is not None:
                on_frame(i, len(frames))
    return path
