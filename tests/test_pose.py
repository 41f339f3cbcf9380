"""Pose sources, skeleton drawing and the pose ControlNet pipeline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from stableidentity.cli import main
from stableidentity.errors import InvalidInputError
from stableidentity.identity import Identity
from stableidentity.pose import (
    builtin_poses,
    builtin_skeleton,
    guess_source,
    looks_like_skeleton,
    pose_skeleton,
    read_pose_json,
    skeleton_from_photo,
)

# OpenPose's drawing convention (COCO-18, 1-based pairs) and palette: limbs are drawn at 0.6 of these colours.
LIMBS = [(2, 3), (2, 6), (3, 4), (4, 5), (6, 7), (7, 8), (2, 9), (9, 10), (10, 11), (2, 12), (12, 13),
         (13, 14), (2, 1), (1, 15), (15, 17), (1, 16), (16, 18)]
COLOURS = [(255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
           (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
           (170, 0, 255), (255, 0, 255), (255, 0, 170)]


def limbs_drawn(image: Image.Image) -> set[int]:
    rgb = np.asarray(image.convert("RGB"))
    found = set()
    for i, colour in enumerate(COLOURS):
        limb = np.array([int(c * 0.6) for c in colour])
        if (rgb == limb).all(axis=2).sum() >= 10:
            found.add(i)
    return found


def limbs_expected(path) -> set[int]:
    (body,), _ = read_pose_json(path)
    return {i for i, (a, b) in enumerate(LIMBS) if body[a - 1] is not None and body[b - 1] is not None}


def test_there_are_the_eight_built_in_poses():
    assert set(builtin_poses()) >= {
        "standing-front", "arms-crossed", "waving", "sitting", "walking", "looking-left", "looking-right",
        "close-up-portrait",
    }


@pytest.mark.parametrize("name", sorted(builtin_poses()))
@pytest.mark.parametrize("size", [(512, 512), (768, 512)])
def test_every_built_in_pose_draws_its_limbs_at_any_size(name, size):
    skeleton = builtin_skeleton(name, *size)
    assert skeleton.size == size
    expected = limbs_expected(builtin_poses()[name])
    assert len(expected) >= 7
    assert limbs_drawn(skeleton) == expected
    assert looks_like_skeleton(skeleton)


def test_keypoints_keep_their_aspect_ratio_in_a_wider_frame():
    skeleton = np.asarray(builtin_skeleton("standing-front", 768, 512))
    ys, xs = np.nonzero(skeleton.max(axis=2))
    # A 512x768 canvas fitted into 768x512 is centred horizontally and scaled by 2/3.
    assert abs((xs.min() + xs.max()) / 2 - 384) < 20
    assert ys.max() - ys.min() < 512 and xs.max() - xs.min() < 0.5 * 768


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "could not read"),
        (json.dumps({"canvas_width": 512, "canvas_height": 512}), "people"),
        (json.dumps({"people": [{"pose_keypoints_2d": [0] * 54}]}), "canvas_width"),
        (json.dumps({"canvas_width": 512, "canvas_height": 512, "people": [{"pose_keypoints_2d": [1, 2, 3]}]}), "54 numbers"),
        (json.dumps({"canvas_width": 512, "canvas_height": 512, "people": [{"pose_keypoints_2d": ["a"] * 54}]}), "numbers"),
    ],
)
def test_bad_pose_json_gets_a_clear_error(tmp_path, content, message):
    path = tmp_path / "pose.json"
    path.write_text(content)
    with pytest.raises(InvalidInputError, match=message):
        pose_skeleton("json", path, 512, 512)


def test_sources_are_told_apart(tmp_path, astronaut_path):
    builtin_skeleton("waving", 256, 256).save(tmp_path / "skeleton.png")
    assert guess_source("waving") == "builtin"
    assert guess_source(str(tmp_path / "skeleton.png")) == "skeleton"
    assert guess_source(str(astronaut_path)) == "photo"
    with pytest.raises(InvalidInputError, match="neither a built-in pose"):
        guess_source("moonwalk")


def test_photo_runs_through_the_annotator(manager, astronaut_path):
    skeleton, people = skeleton_from_photo(manager.openpose(), Image.open(astronaut_path), 384, 256)
    assert skeleton.size == (384, 256) and people >= 0  # random weights: no content is asserted


def test_pose_pipeline_shares_the_base_components(manager):
    pose, t2i = manager.pose_to_image(), manager.text_to_image()
    for name in ("unet", "vae", "text_encoder", "tokenizer"):
        assert getattr(pose.pipe, name) is getattr(t2i.pipe, name) is getattr(manager.base(), name)


def test_pose_pipeline_generates_and_refuses_bad_settings(manager):
    identity = Identity(torch.randn(2, manager.base().token_width) * 0.02)
    skeleton = builtin_skeleton("waving", 256, 256)
    result = manager.pose_to_image()(identity, "<id> waving", skeleton, num_images=2, steps=2, width=256, height=256, seed=3)
    assert [im.size for im in result.images] == [(256, 256)] * 2 and result.seeds == [3, 4]
    with pytest.raises(InvalidInputError, match="scale"):
        manager.pose_to_image()(identity, "<id>", skeleton, controlnet_scale=3.0, steps=1)
    with pytest.raises(InvalidInputError, match="guidance end"):
        manager.pose_to_image()(identity, "<id>", skeleton, guidance_end=0.0, steps=1)


def test_pose_cli_end_to_end(tmp_path, capsys):
    identity = Identity(torch.randn(2, 32) * 0.02).save(tmp_path / "me.safetensors")
    builtin_skeleton("sitting", 256, 256).save(tmp_path / "skeleton.png")
    for pose in ("waving", str(builtin_poses()["walking"]), str(tmp_path / "skeleton.png")):
        out = tmp_path / f"out-{len(list(tmp_path.iterdir()))}"
        code = main(["pose", str(identity), "<id> dancing", "--pose", pose, "-n", "2", "-o", str(out), "--seed", "1",
                     "--steps", "2", "--width", "256", "--height", "256", "--preset", "tiny"])
        assert code == 0, capsys.readouterr().err
        assert sorted(p.name for p in out.iterdir()) == ["me-pose.png", "me-seed1.png", "me-seed2.png"]
        assert Image.open(out / "me-seed1.png").size == (256, 256)
    code = main(["pose", str(identity), "<id>", "--pose", "moonwalk", "--preset", "tiny"])
    assert code == 2 and capsys.readouterr().err.strip().splitlines()[-1].startswith("error: ")
