"""The model manager: shared components, memory policy, jobs, status, ZeroGPU helper.

Memory tests use the real tiny models and a simulated ``memory_budget`` on CPU,
where moving a group is bookkeeping only; the CUDA test checks the weights
really move.
"""

from __future__ import annotations

import threading
import time
import types
from collections import Counter

import pytest
import torch

from stableidentity.errors import OutOfMemoryError, StableIdentityError
from stableidentity.manager import ModelManager

from conftest import gpu

GROUPS = ("base", "face_encoder", "face_parser")


def group_sizes(device: str) -> dict[str, int]:
    m = ModelManager("tiny", device=device)
    with m.use(*GROUPS):
        return {name: m.groups[name].size for name in GROUPS}


@pytest.fixture(scope="module")
def sizes() -> dict[str, int]:
    return group_sizes("cpu")


def two_of_three(sizes: dict[str, int], device: str = "cpu") -> ModelManager:
    """A manager whose budget holds any two of the three groups, never all three."""
    return ModelManager("tiny", device=device, memory_budget=sum(sizes.values()) - 1)


def on_device(m: ModelManager) -> list[str]:
    return sorted(name for name, group in m.groups.items() if group.on_device)


def tensor_devices(module: torch.nn.Module) -> set[str]:
    return {t.device.type for t in [*module.parameters(), *module.buffers()]}


# --- sharing -------------------------------------------------------------------------------------


def test_pipelines_share_the_very_same_base_models(manager):
    base = manager.base()
    t2i, learner = manager.text_to_image(), manager.learner()
    assert t2i.base is base and learner.base is base
    for part in ("tokenizer", "text_encoder", "unet", "vae"):
        assert getattr(t2i.pipe, part) is getattr(base, part)
    assert learner.face_encoder is manager.face_encoder()
    assert manager.text_to_image() is t2i and manager.learner() is learner


def test_each_group_is_loaded_once_however_many_pipelines_use_it():
    m = ModelManager("tiny", device="cpu")
    calls = Counter()

    def counting(name, load):
        def wrapped(manager, device):
            calls[name] += 1
            return load(manager, device)

        return wrapped

    m.loaders = {name: counting(name, load) for name, load in m.loaders.items()}
    m.text_to_image(), m.learner(), m.celeb_space(), m.face_preparer(), m.base(), m.face_encoder()
    assert calls == {"base": 1, "face_encoder": 1, "face_parser": 1}
    workers = ["celeb_space", "face_preparer", "learner", "text_to_image"]
    assert m.loaded() == sorted([*GROUPS, *workers])


def test_a_new_group_plugs_in_with_one_loader():
    m = ModelManager("tiny", device="cpu")
    m.loaders["toy"] = lambda manager, device: torch.nn.Linear(4, 4).to(device, manager.dtype)
    toy = m.group("toy")
    assert isinstance(toy, torch.nn.Linear) and m.group("toy") is toy
    assert m.groups["toy"].size == (16 + 4) * 4 and m.groups["toy"].on_device
    with pytest.raises(KeyError, match="unknown model group 'nope'"):
        m.group("nope")


# --- memory policy -------------------------------------------------------------------------------


def test_budget_evicts_the_least_recently_used_group_and_brings_it_back(sizes):
    m = two_of_three(sizes)
    unet = m.base().unet
    m.face_encoder()
    assert on_device(m) == ["base", "face_encoder"]
    m.face_parser()  # no room for a third: base, used longest ago, goes to the CPU
    assert on_device(m) == ["face_encoder", "face_parser"]
    assert m.base().unet is unet  # back on the device, the very same object
    assert on_device(m) == ["base", "face_parser"]  # face_encoder was the least recently used now
    assert m.free_memory() >= 0


def test_groups_in_use_are_never_evicted(sizes):
    m = two_of_three(sizes)
    with m.use("base"):
        m.face_encoder()
        m.face_parser()  # base is the least recently used but in use: face_encoder goes
        assert on_device(m) == ["base", "face_parser"]
    with pytest.raises(OutOfMemoryError, match="do not fit in the memory budget"):
        with m.use(*GROUPS):  # all three in use at once can't fit, and none may evict another
            pass
    assert all(group.users == 0 for group in m.groups.values())


def test_groups_of_one_use_do_not_evict_each_other(sizes, monkeypatch):
    m = two_of_three(sizes)
    m.face_encoder()
    m.face_parser()
    evicted = []
    offload = m._offload
    monkeypatch.setattr(m, "_offload", lambda group: (evicted.append(group.name), offload(group)))
    with m.use("base", "face_encoder") as (base, vit):
        assert on_device(m) == ["base", "face_encoder"]
        assert base is m.groups["base"].value and vit is m.groups["face_encoder"].value
    assert evicted == ["face_parser"]  # not face_encoder, although it was used longest ago


def test_a_budget_smaller_than_a_group_is_a_clear_error(sizes):
    m = ModelManager("tiny", device="cpu", memory_budget=sizes["base"] - 1)
    with pytest.raises(OutOfMemoryError, match=r"'base' models \(.* MB\) do not fit"):
        m.base()


def test_pipeline_calls_bring_their_groups_back_and_hold_them(sizes, prepared_face):
    m = two_of_three(sizes)
    learner = m.learner()
    m.face_preparer()  # the parser pushes base or face_encoder off the device
    assert "face_parser" in on_device(m) and len(on_device(m)) == 2
    seen = []
    learner(prepared_face, steps=1, callback=lambda *_: seen.append((on_device(m), m.groups["base"].users)))
    assert seen == [(["base", "face_encoder"], 1)]
    assert m.groups["base"].users == 0


@gpu
def test_evicted_weights_really_move_to_the_cpu_and_back():
    m = two_of_three(group_sizes("cuda"), device="cuda")
    unet = m.base().unet
    assert tensor_devices(unet) == {"cuda"}
    m.face_encoder()
    m.face_parser()
    assert tensor_devices(unet) == {"cpu"} and not m.groups["base"].on_device
    m.base()
    assert tensor_devices(unet) == {"cuda"}
    assert tensor_devices(m.groups["face_encoder"].value.model) == {"cpu"}
    assert "GPU memory" in m.status()


# --- jobs ------------------------------------------------------------------------------------------


def test_jobs_run_one_at_a_time():
    m = ModelManager("tiny", device="cpu")
    first_in, release, order = threading.Event(), threading.Event(), []

    def first():
        with m.job("learning"):
            first_in.set()
            release.wait(5)
            order.append("first done")

    def second():
        with m.job("generating"):
            order.append("second started")

    a = threading.Thread(target=first)
    a.start()
    assert first_in.wait(5)
    b = threading.Thread(target=second)
    b.start()
    time.sleep(0.2)
    assert m.busy and "busy: learning" in m.status() and order == []  # the second job waits
    release.set()
    a.join(5), b.join(5)
    assert order == ["first done", "second started"] and not m.busy


def test_out_of_memory_in_a_job_is_a_clear_error_and_frees_the_gpu(sizes):
    m = two_of_three(sizes)
    m.face_parser()
    with pytest.raises(OutOfMemoryError) as caught:
        with m.job("generating images"):
            with m.use("base"):
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    message = str(caught.value)
    assert isinstance(caught.value, StableIdentityError)
    assert "ran out of memory while generating images" in message and "fewer images" in message
    assert "face_parser" in message and on_device(m) == ["base"]  # the job's own group stays
    assert not m.busy
    done = threading.Event()

    def another_job():
        with m.job("again"):
            done.set()

    threading.Thread(target=another_job).start()
    assert done.wait(5)  # the lock was released


def test_other_errors_pass_through_a_job_unchanged():
    m = ModelManager("tiny", device="cpu")
    with pytest.raises(RuntimeError, match="shape mismatch") as caught:
        with m.job("learning"):
            raise RuntimeError("shape mismatch")
    assert not isinstance(caught.value, StableIdentityError) and not m.busy


# --- status ----------------------------------------------------------------------------------------


def test_status_says_where_each_group_lives_and_its_size(sizes):
    m = two_of_three(sizes)
    assert "no models loaded yet" in m.status()
    m.base(), m.face_encoder(), m.face_parser()
    text = m.status()
    assert text.startswith("**tiny** on `cpu` (float32)")
    assert f"- `base`: cpu, {sizes['base'] / 2**20:.1f} MB (offloaded)" in text
    assert f"- `face_parser`: cpu, {sizes['face_parser'] / 2**20:.1f} MB (ready)" in text
    assert "`face_encoder`" in text and "- budget:" in text


# --- ZeroGPU ---------------------------------------------------------------------------------------


def test_gpu_task_is_spaces_gpu_on_spaces_and_a_no_op_elsewhere(monkeypatch):
    from stableidentity import spaces as zerogpu

    def work(steps):
        return steps

    monkeypatch.setattr(zerogpu, "spaces", None)
    assert zerogpu.gpu_task(60)(work) is work

    asked = []
    fake = types.SimpleNamespace(GPU=lambda duration: asked.append(duration) or (lambda fn: ("on a gpu", fn)))
    monkeypatch.setattr(zerogpu, "spaces", fake)

    def per_call(steps):
        return 10 + steps

    assert zerogpu.gpu_task(per_call)(work) == ("on a gpu", work)
    assert zerogpu.gpu_task(120)(work) == ("on a gpu", work)
    assert asked == [per_call, 120]


def test_zero_gpu_durations_follow_the_request():
    from stableidentity.spaces import estimate_seconds

    assert estimate_seconds(40, 0.08, 25, 4) == 48
    assert estimate_seconds(60, 0.12, 450) == 114
    assert estimate_seconds(60, 0.12, "many", fallback=300) == 300
