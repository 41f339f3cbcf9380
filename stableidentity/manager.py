"""The model manager: the single owner of every model in the process.

Pipelines and the learner ask it for components; it loads each model once, on
first use, and hands out the same objects to everyone (text-to-image, the
learner and later pipelines share one UNet, VAE and text encoder).

Models come in *groups* ("base", "face_encoder", "face_parser"; later
"controlnet", "video", ...), each loaded by one entry of :data:`LOADERS`. A group
is the unit of memory policy: it is tracked with its size and last use, and when
the device runs short the least recently used groups that no one is using are
moved to ``offload_device`` (the CPU), to come back on their next use. Adding a
model is a loader in :data:`LOADERS` plus, for a new pipeline, one accessor
built with :meth:`ModelManager._pipeline`::

    LOADERS["controlnet"] = lambda m, device: load_controlnet(m.preset.controlnet, device, m.dtype)

    def controlnet_pipeline(self):
        needs = ("base", "controlnet")
        return self._pipeline("controlnet_pipeline", needs, lambda: Pipe(self.base(), self.group("controlnet")))

GPU work runs inside :meth:`ModelManager.job`: one job at a time, and a CUDA
out-of-memory inside becomes a user-facing :class:`OutOfMemoryError`.
"""

from __future__ import annotations

import gc
import math
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
from typing import Any, Callable, Iterator

import torch

from . import loaders
from .errors import OutOfMemoryError
from .presets import ModelPreset, get_preset

# How to load a group: (manager, device) -> the group's object (a module, or a dataclass of modules).
Loader = Callable[["ModelManager", torch.device], Any]

LOADERS: dict[str, Loader] = {
    "base": lambda m, device: loaders.load_base(m.preset.base, device, m.dtype),
    "face_encoder": lambda m, device: loaders.load_face_encoder(m.preset.face_encoder, device, m.dtype),
    "face_parser": lambda m, device: loaders.load_face_parser(m.preset.face_parser, device, m.dtype),
    "controlnet": lambda m, device: loaders.load_controlnet(m.preset.controlnet, device, m.dtype),
    # OpenPose's networks stay fp32: controlnet_aux feeds them fp32 images.
    "openpose": lambda m, device: loaders.load_openpose(m.preset.openpose, device),
    "video": lambda m, device: loaders.load_video(m.preset.video, device, m.dtype),
}

# Kept free on CUDA for activations when deciding whether a group fits.
CUDA_HEADROOM = 1 << 30
MB = 1 << 20


def pick_device(requested: str | None = None) -> torch.device:
    """CUDA if present, then Apple MPS, else CPU (``requested`` overrides)."""
    if requested:
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: torch.device) -> torch.dtype:
    """Half precision for frozen weights on accelerators; fp32 on CPU."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def modules_of(value: Any) -> list[torch.nn.Module]:
    """The torch modules a group holds: the value itself, or its module attributes (dataclass, pipeline)."""
    if isinstance(value, torch.nn.Module):
        return [value]
    return [v for v in vars(value).values() if isinstance(v, torch.nn.Module)]


@dataclass
class ModelGroup:
    """One loaded group and its memory bookkeeping (read it; the manager writes it)."""

    name: str
    value: Any
    size: int  # bytes of parameters and buffers
    on_device: bool = False  # on the manager's device (else on its offload device)
    last_used: float = 0.0  # time.perf_counter() of the last use
    users: int = 0  # open use() blocks: never evicted while > 0

    @property
    def where(self) -> str:
        """The device its weights are on now."""
        for module in modules_of(self.value):
            for tensor in chain(module.parameters(), module.buffers()):
                return str(tensor.device)
        return "-"

    def move(self, device: torch.device) -> None:
        for module in modules_of(self.value):
            module.to(device)  # in place: everyone holding the module sees the move


def _size(value: Any) -> int:
    tensors = {id(t): t for m in modules_of(value) for t in chain(m.parameters(), m.buffers())}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def _is_oom(error: BaseException) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error)


class Managed:
    """A pipeline whose calls first bring its groups onto the device and mark them in use.

    Attributes and other methods are the wrapped pipeline's own (``__wrapped__``);
    when memory is tight, call those inside ``manager.use(...)``.
    """

    def __init__(self, manager: "ModelManager", needs: tuple[str, ...], pipeline: Any):
        self._manager, self._needs, self.__wrapped__ = manager, needs, pipeline

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self._manager.use(*self._needs):
            return self.__wrapped__(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            wrapped = vars(self)["__wrapped__"]
        except KeyError:
            raise AttributeError(name) from None
        return getattr(wrapped, name)

    def __repr__(self) -> str:
        return f"Managed({self.__wrapped__!r}, needs={self._needs})"


class ModelManager:
    """Lazily loads, shares and places the models of one preset.

    ``memory_budget`` (bytes) caps the groups kept on the device; without it the
    limit is CUDA's free memory, and on CPU/MPS nothing is evicted.
    """

    def __init__(
        self,
        preset: ModelPreset | str = "sd21",
        device: str | None = None,
        *,
        memory_budget: int | None = None,
        offload_device: str = "cpu",
        video_offload: bool = False,
    ):
        self.preset = get_preset(preset) if isinstance(preset, str) else preset
        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device)
        self.offload_device = torch.device(offload_device)
        self.memory_budget = memory_budget
        self.video_offload = video_offload  # model CPU offload for the video pipeline (small GPUs)
        self.loaders: dict[str, Loader] = dict(LOADERS)
        self.groups: dict[str, ModelGroup] = {}
        self._workers: dict[str, Any] = {}  # pipelines and derived data, built once
        self._lock = threading.RLock()  # loading, moving, bookkeeping
        self._job_lock = threading.RLock()  # one GPU job at a time
        self._job: str | None = None
        self._job_groups: set[str] = set()

    # --- memory policy ---

    @contextmanager
    def use(self, *names: str) -> Iterator[tuple[Any, ...]]:
        """Load the groups if needed, put them on the device and keep them there for the block.

        Groups of one ``use`` never evict each other; others make room, least recently used first.
        Yields the groups' objects in order.
        """
        with self._lock:
            groups = [self._load(name) for name in names]
            for group in groups:  # in use before any moves, so they don't evict each other
                group.users += 1
                group.last_used = time.perf_counter()
            if self._job is not None:
                self._job_groups.update(names)
            try:
                for group in groups:
                    self._to_device(group)
            except BaseException:
                self._release(groups)
                raise
        try:
            yield tuple(group.value for group in groups)
        finally:
            with self._lock:
                self._release(groups)

    def group(self, name: str) -> Any:
        """A group's object, loaded once and on the device now."""
        with self.use(name) as (value,):
            return value

    def _load(self, name: str) -> ModelGroup:
        if name not in self.groups:
            if name not in self.loaders:
                raise KeyError(f"unknown model group '{name}': choose one of {', '.join(self.loaders)}")
            # Loaded on the offload device: its size is known before it claims device memory.
            value = self.loaders[name](self, self.offload_device)
            self.groups[name] = ModelGroup(name, value, _size(value))
        return self.groups[name]

    def _release(self, groups: list[ModelGroup]) -> None:
        for group in groups:
            group.users -= 1
            group.last_used = time.perf_counter()

    def _to_device(self, group: ModelGroup) -> None:
        if group.on_device:
            return
        if not self._make_room(group.size) and group.size > self._budget_room():
            in_use = sorted(g.name for g in self.groups.values() if g.on_device and g.users)
            beside = f" next to {', '.join(in_use)}, which are in use" if in_use else ""
            raise OutOfMemoryError(
                f"the '{group.name}' models ({group.size / MB:.1f} MB) do not fit in the memory budget of "
                f"{self.memory_budget / MB:.1f} MB{beside}"
            )
        group.move(self.device)  # on CUDA, a real shortfall surfaces as an out-of-memory inside job()
        group.on_device = True

    def _offload(self, group: ModelGroup) -> None:
        group.move(self.offload_device)
        group.on_device = False

    def _make_room(self, size: int) -> bool:
        """Offload idle groups, least recently used first, until ``size`` bytes fit; False if they can't."""
        idle = sorted((g for g in self.groups.values() if g.on_device and not g.users), key=lambda g: g.last_used)
        while self.free_memory() < size and idle:
            self._offload(idle.pop(0))
        return self.free_memory() >= size

    def free_memory(self) -> float:
        """Bytes a group may still take on the device: the budget's room and CUDA's free memory, if any."""
        room = self._budget_room()
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            cached = torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)
            room = min(room, free + cached - CUDA_HEADROOM)
        return room  # inf on CPU/MPS without a budget: nothing is ever evicted

    def _budget_room(self) -> float:
        if self.memory_budget is None:
            return math.inf
        return self.memory_budget - sum(g.size for g in self.groups.values() if g.on_device)

    # --- jobs ---

    @contextmanager
    def job(self, what: str) -> Iterator[None]:
        """Run GPU work one job at a time; an out-of-memory becomes a clear :class:`OutOfMemoryError`.

        ``what`` says what the job does, for the message ("learning the identity").
        """
        with self._job_lock:
            outer = self._job
            if outer is None:
                self._job_groups = set()
            self._job = what
            try:
                yield
            except RuntimeError as error:  # torch.cuda.OutOfMemoryError is a RuntimeError
                if not _is_oom(error) or outer is not None:  # the outermost job reports it
                    raise
                traceback.clear_frames(error.__traceback__)  # the failed step's tensors die with its frames
                moved = self._recover()
                hint = f"; other models ({', '.join(moved)}) were moved off the GPU, so trying again may work"
                raise OutOfMemoryError(
                    f"the GPU ran out of memory while {what}; try fewer images or a smaller size{hint if moved else ''}"
                ) from error
            finally:
                self._job = outer

    def _recover(self) -> list[str]:
        """After an out-of-memory: offload the groups this job did not use and free cached memory."""
        with self._lock:
            idle = [g for g in self.groups.values() if g.on_device and not g.users]
            moved = [g.name for g in idle if g.name not in self._job_groups]
            for name in moved:
                self._offload(self.groups[name])
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return moved

    @property
    def busy(self) -> bool:
        """Whether a job is running (the UI can say "busy, please wait")."""
        return self._job is not None

    def status(self) -> str:
        """A short Markdown readout of the preset, the device and where each loaded group lives."""
        lines = [f"**{self.preset.name}** on `{self.device}` ({str(self.dtype).removeprefix('torch.')})"]
        if self._job is not None:
            lines[0] += f", busy: {self._job}"
        groups = dict(self.groups)  # a snapshot: no lock, so a long load doesn't block the readout
        for group in groups.values():
            state = "in use" if group.users else ("ready" if group.on_device else "offloaded")
            lines.append(f"- `{group.name}`: {group.where}, {group.size / MB:.1f} MB ({state})")
        if not groups:
            lines.append("- no models loaded yet")
        if self.memory_budget is not None:
            used = sum(g.size for g in groups.values() if g.on_device)
            lines.append(f"- budget: {used / MB:.1f} / {self.memory_budget / MB:.1f} MB")
        # Not before CUDA is first used (nor on ZeroGPU's CPU side, where CUDA is only emulated).
        if self.device.type == "cuda" and torch.cuda.is_initialized():
            free, total = torch.cuda.mem_get_info(self.device)
            lines.append(f"- GPU memory: {(total - free) / MB:,.0f} / {total / MB:,.0f} MB used")
        return "\n".join(lines)

    # --- components ---

    def base(self):
        """Tokenizer, text encoder, UNet, VAE and scheduler config of the base model."""
        return self.group("base")

    def face_encoder(self):
        return self.group("face_encoder")

    def face_parser(self):
        return self.group("face_parser")

    def celeb_space(self):
        """Celebrity-name statistics of this base model (computed once per base)."""
        from .identity import CelebSpace

        def compute():
            base = self.base()
            return CelebSpace.from_text_encoder(base.tokenizer, base.text_encoder)

        return self._build("celeb_space", ("base",), compute)

    # --- ready-to-use workers ---

    def _build(self, name: str, needs: tuple[str, ...], build: Callable[[], Any]) -> Any:
        """Build a worker once, with the groups it needs on the device (workers remember the device)."""
        with self._lock:
            if name not in self._workers:
                with self.use(*needs):
                    self._workers[name] = build()
            return self._workers[name]

    def _pipeline(self, name: str, needs: tuple[str, ...], build: Callable[[], Any]) -> Managed:
        """A worker whose every call runs inside ``use(*needs)``."""
        return self._build(name, needs, lambda: Managed(self, needs, build()))

    def face_preparer(self):
        from .face import FacePreparer, make_detector

        def build():
            return FacePreparer(self.face_parser(), make_detector(self.preset.insightface))

        return self._pipeline("face_preparer", ("face_parser",), build)

    def learner(self):
        from .training import IdentityLearner

        def build():
            return IdentityLearner(self.base(), self.face_encoder(), self.celeb_space())

        return self._pipeline("learner", ("base", "face_encoder"), build)

    def text_to_image(self):
        from .generate import IdentityTextToImage

        return self._pipeline("text_to_image", ("base",), lambda: IdentityTextToImage(self.base()))

    def pose_to_image(self):
        """Identity + pose skeleton -> images (OpenPose ControlNet on the shared base)."""
        from .pose import IdentityPoseToImage

        def build():
            return IdentityPoseToImage(self.base(), self.group("controlnet"))

        return self._pipeline("pose_to_image", ("base", "controlnet"), build)

    def openpose(self):
        """The OpenPose annotator (photo -> skeleton)."""
        return self.group("openpose")

    def text_to_video(self):
        """Identity + prompt -> video frames (ModelScope text-to-video)."""
        from .video import IdentityTextToVideo

        def build():
            return IdentityTextToVideo(self.group("video"), offload=self.video_offload)

        return self._pipeline("text_to_video", ("video",), build)

    def loaded(self) -> list[str]:
        """Names of the loaded groups and built workers."""
        with self._lock:
            return sorted([*self.groups, *self._workers])
