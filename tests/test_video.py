"""Identity-driven text-to-video (ModelScope) on the tiny preset."""

from __future__ import annotations

import imageio.v2 as imageio
import pytest
import torch

from stableidentity.cli import main
from stableidentity.errors import IdentityFileError, InvalidInputError
from stableidentity.identity import Identity

SMALL = dict(frames=8, steps=2, width=128, height=128, seed=1)


def read_video(path):
    reader = imageio.get_reader(path)
    meta = reader.get_meta_data()
    frames = [frame for frame in reader]
    reader.close()
    return frames, meta


def test_identity_reaches_the_video_unet(manager):
    """Two identities, same prompt: the video UNet's text embeddings agree before <id> and differ from it on."""
    video = manager.group("video")
    seen = []

    def capture(module, args, kwargs):
        seen.append(kwargs["encoder_hidden_states"].detach().clone())

    handle = video.unet.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        torch.manual_seed(0)
        for _ in range(2):
            identity = Identity(torch.randn(2, video.token_width))
            manager.text_to_video()(identity, "a photo of <id> dancing", **SMALL)
    finally:
        handle.remove()
    first, second = seen[0], seen[len(seen) // 2]  # the first UNet call of each video
    conditional = first.shape[0] - 1  # classifier-free guidance: [negative, positive]
    a, b = first[conditional], second[conditional]
    placeholder = 4  # BOS a photo of | <id> ...
    torch.testing.assert_close(a[:placeholder], b[:placeholder])
    assert (a[placeholder:] - b[placeholder:]).abs().amax(dim=-1).min() > 1e-4  # every later position differs


def test_video_frames_and_files(manager, tmp_path):
    identity = Identity(torch.randn(2, manager.group("video").token_width) * 0.02)
    result = manager.text_to_video()(identity, "<id> walking", **SMALL)
    assert result.frames.shape == (8, 128, 128, 3) and result.frames.dtype.name == "uint8"
    frames, meta = read_video(result.save(tmp_path / "clip.mp4", fps=8))
    assert len(frames) == 8 and frames[0].shape == (128, 128, 3) and meta["fps"] == 8
    assert meta["codec"] == "h264" and meta["pix_fmt"].startswith("yuv420p")
    gif = imageio.mimread(result.save(tmp_path / "clip.gif", fps=8))
    assert len(gif) == 8


def test_bad_video_settings_are_refused(manager):
    video_width = manager.group("video").token_width
    with pytest.raises(IdentityFileError, match="width"):
        manager.text_to_video()(Identity(torch.zeros(2, video_width + 8)), "<id>", **SMALL)
    identity = Identity(torch.zeros(2, video_width))
    with pytest.raises(InvalidInputError, match="frames"):
        manager.text_to_video()(identity, "<id>", **(SMALL | {"frames": 40}))
    with pytest.raises(InvalidInputError, match="fps"):
        manager.text_to_video()(identity, "<id>", fps=0, **SMALL)


def test_video_cli_end_to_end(tmp_path, capsys):
    identity = Identity(torch.randn(2, 32) * 0.02).save(tmp_path / "me.safetensors")
    out = tmp_path / "me.mp4"
    code = main(["video", str(identity), "<id> on a beach", "--frames", "12", "--fps", "6", "--steps", "2",
                 "--width", "128", "--height", "192", "-o", str(out), "--seed", "2", "--preset", "tiny"])
    assert code == 0, capsys.readouterr().err
    frames, meta = read_video(out)
    assert len(frames) == 12 and frames[0].shape == (192, 128, 3) and meta["fps"] == 6

    def bad(*argv):
        assert main(["video", str(identity), "<id>", "--preset", "tiny", *argv]) == 2
        return capsys.readouterr().err.strip().splitlines()[-1]

    assert "frames must be between 8 and 32" in bad("--frames", "40")
    assert "fps" in bad("--fps", "0")
    assert ".mp4 or .gif" in bad("-o", str(tmp_path / "clip.avi"))
    wide = Identity(torch.zeros(2, 1024)).save(tmp_path / "wide.safetensors")
    assert main(["video", str(wide), "<id>", "--preset", "tiny", "-o", str(tmp_path / "w.mp4")]) == 2
    assert "width" in capsys.readouterr().err
