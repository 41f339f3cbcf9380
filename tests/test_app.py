"""The live app on localhost (tiny preset), driven through its API with gradio_client."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from live import LiveApp


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def local_app(data_dir):
    app = LiveApp(data_dir, "--data-dir", str(data_dir))
    yield app
    app.stop()


@pytest.fixture(scope="module")
def public_app(tmp_path_factory):
    app = LiveApp(tmp_path_factory.mktemp("public"), "--public")
    yield app
    app.stop()


def learn(client: Client, photo: Path, name: str = "astro", steps: int = 3, seed: int = 0):
    return client.predict(handle_file(str(photo)), name, steps, seed, api_name="/learn")


def generate(client: Client, identity: str, prompt: str = "<id> on the moon", n: int = 1, **kw):
    args = dict(negative="", steps=2, guidance=8.5, width=256, height=256, seed=7, randomize=False) | kw
    return client.predict(identity, prompt, args["negative"], n, args["steps"], args["guidance"], args["width"],
                          args["height"], args["seed"], args["randomize"], api_name="/generate")


def test_page_shows_the_offline_banner_and_status(local_app):
    import urllib.request

    html = urllib.request.urlopen(local_app.url, timeout=30).read().decode()
    assert "StableIdentity" in html
    config = local_app.client().config
    text = str(config)
    assert "Offline demo mode" in text and "Preset **tiny**" in text


def test_learn_then_generate_through_the_api(local_app, astronaut_path, data_dir):
    client = local_app.client()
    overlay, info = client.predict(handle_file(str(astronaut_path)), api_name="/prepare_face")
    assert Path(overlay).is_file() and "1 face(s) found" in info

    plot, message, file, identity, gallery = learn(client, astronaut_path, steps=3)
    assert "Learned **astro**" in message and file.endswith(".safetensors") and len(identity) == 32
    assert [row[0] for row in plot["data"]] == [1, 2, 3]
    assert any(p.name == "astro.safetensors" for p in data_dir.rglob("*.safetensors"))  # persisted on disk

    images, info, seed = generate(client, identity, n=2)
    assert len(images) == 2 and [im["caption"] for im in images] == ["seed 7", "seed 8"]
    assert "<id> on the moon" in info and seed == 7

    listed = client.predict(api_name="/list_identities")
    assert identity in [e["id"] for e in listed]


def test_bad_input_comes_back_as_errors_and_the_app_keeps_serving(local_app, astronaut_path, no_face_path):
    client = local_app.client()
    with pytest.raises(AppError, match="no face found"):
        learn(client, no_face_path)
    # Slider bounds hold on the server: gradio refuses them before our code runs.
    with pytest.raises(AppError, match="maximum value 1000"):
        learn(client, astronaut_path, steps=5000)
    with pytest.raises(AppError, match="minimum value 1"):
        learn(client, astronaut_path, steps=0)
    with pytest.raises(AppError, match="whole number"):
        learn(client, astronaut_path, steps=2.5)
    identity = client.predict(api_name="/list_identities")[0]["id"]
    with pytest.raises(AppError, match="maximum value 30"):
        generate(client, identity, guidance=99)
    with pytest.raises(AppError, match="width must be a multiple of 8"):
        generate(client, identity, width=260)
    with pytest.raises(AppError, match="not in your library"):
        generate(client, "0" * 32)
    with pytest.raises(AppError, match="pick an identity"):
        generate(client, "")
    # Still answering, and still generating.
    assert "tiny" in client.predict(api_name="/status")
    images, _, _ = generate(client, identity)
    assert len(images) == 1


def test_cancel_stops_learning_and_the_app_stays_usable(local_app, astronaut_path):
    client = local_app.client()
    job = client.submit(handle_file(str(astronaut_path)), "long", 1000, 0, api_name="/learn")
    time.sleep(8)  # let it get going
    start = time.time()
    client.predict(api_name="/cancel")
    with pytest.raises(AppError, match="cancelled"):
        job.result(timeout=120)
    assert time.time() - start < 30
    _, message, *_ = learn(client, astronaut_path, name="after", steps=2)
    assert "Learned **after**" in message


def test_identities_persist_across_restarts(local_app, data_dir):
    before = {e["id"] for e in local_app.client().predict(api_name="/list_identities")}
    again = LiveApp(data_dir, "--data-dir", str(data_dir))
    try:
        after = {e["id"] for e in again.client().predict(api_name="/list_identities")}
    finally:
        again.stop()
    assert before and before <= after


def test_public_sessions_are_isolated(public_app, astronaut_path, tmp_path):
    alice, mallory = public_app.client(), public_app.client()
    _, _, _, identity, _ = learn(alice, astronaut_path, name="alice", steps=2)
    assert [e["id"] for e in alice.predict(api_name="/list_identities")] == [identity]
    assert mallory.predict(api_name="/list_identities") == []
    with pytest.raises(AppError, match="not in your library"):
        generate(mallory, identity)
    # Mallory can bring her own saved identity file and use it; a file for another model is refused.
    import torch

    from stableidentity.identity import Identity

    mine = Identity(torch.randn(2, 32)).save(tmp_path / "mine.safetensors")
    _, _, own, _ = mallory.predict(handle_file(str(mine)), "mine", api_name="/upload_identity")
    assert own != identity and len(generate(mallory, own)[0]) == 1
    wide = Identity(torch.randn(2, 1024)).save(tmp_path / "sd21.safetensors")
    with pytest.raises(AppError, match="width"):
        mallory.predict(handle_file(str(wide)), "", api_name="/upload_identity")
    assert [e["id"] for e in alice.predict(api_name="/list_identities")] == [identity]


def test_pose_tab_through_the_api(local_app, astronaut_path, tmp_path):
    client = local_app.client()
    identity = learn(client, astronaut_path, name="poser", steps=2)[3]
    skeleton, note = client.predict("builtin", "waving", None, 512, 768, api_name="/pose_skeleton")
    assert "waving" in note
    from PIL import Image

    assert Image.open(skeleton).size == (512, 768)

    def pose(source, builtin, image):
        return client.predict(identity, "<id> dancing", source, builtin, image, 1.0, 1.0, "", 2, 2, 8.5, 256, 256, 5,
                              False, api_name="/generate_pose")

    items, info, _ = pose("builtin", "sitting", None)
    assert [item["caption"] for item in items] == ["pose: built-in pose 'sitting'", "seed 5", "seed 6"]
    Image.open(skeleton).save(tmp_path / "skeleton.png")
    items, _, _ = pose("skeleton", None, handle_file(str(tmp_path / "skeleton.png")))
    assert items[0]["caption"] == "pose: skeleton image used as it is" and len(items) == 3
    with pytest.raises(AppError, match="upload a reference photo"):
        pose("photo", None, None)


def test_video_tab_through_the_api(local_app, astronaut_path):
    import imageio.v2 as imageio

    client = local_app.client()
    identity = learn(client, astronaut_path, name="mover", steps=2)[3]

    def video(frames=8, fmt="mp4"):
        return client.predict(identity, "<id> walking", "", frames, 8, 2, 9.0, 256, 256, 3, False, fmt,
                              api_name="/generate_video")

    player, download, info, seed = video()
    reader = imageio.get_reader(download)
    assert reader.count_frames() == 8 and reader.get_meta_data()["fps"] == 8 and seed == 3
    assert player is not None and "8 frames at 8 fps" in info
    _, gif, _, _ = video(fmt="gif")
    assert gif.endswith(".gif")
    with pytest.raises(AppError, match="maximum value 32"):
        video(frames=40)


def test_threed_tab_through_the_api(local_app, astronaut_path):
    from plyfile import PlyData

    client = local_app.client()
    identity = learn(client, astronaut_path, name="bust", steps=2)[3]
    _, info, gaussians, turntable, files = client.predict(identity, "a DSLR photo of <id>", "", "smoke", 3, 1,
                                                          api_name="/generate_3d")
    assert "after 3 iterations (smoke)" in info
    assert PlyData.read(gaussians)["vertex"].count > 0 and turntable.endswith(".mp4")
    assert sorted(p.rsplit("/", 1)[-1] for p in files) == ["gaussians.ply", "point_cloud.ply", "turntable.mp4"]
    with pytest.raises(AppError, match="not in the list of choices"):
        client.predict(identity, "<id>", "", "ultra", 0, 1, api_name="/generate_3d")
    with pytest.raises(AppError, match="maximum value 20000"):
        client.predict(identity, "<id>", "", "smoke", 10**6, 1, api_name="/generate_3d")
