"""Face preparation on real photos shipped inside installed packages, with the tiny parser.

Photos: scikit-image's astronaut (one face), insightface's t1.jpg (a group), scikit-image's
coffee cup (no face); fixtures for their paths live in conftest.py.
"""

from __future__ import annotations

import hashlib
import io
import logging
import pickle
import random
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from stableidentity.errors import FaceNotFoundError, InvalidInputError
from stableidentity.face import (
    CROP_SIZE,
    TEMPLATE_512,
    CascadeDetector,
    Detection,
    FacePreparer,
    InsightFaceDetector,
    PreparedFace,
    alignment_matrix,
    detect_faces,
    label_class,
    load_photo,
    make_detector,
    masks_from_labels,
    warp_face,
)


@pytest.fixture(scope="module")
def parser():
    from stableidentity.loaders import load_face_parser
    from stableidentity.presets import get_preset

    return load_face_parser(get_preset("tiny").face_parser)


@pytest.fixture(scope="module")
def cascade() -> CascadeDetector:
    return CascadeDetector()


@pytest.fixture(scope="module")
def preparer(parser, cascade) -> FacePreparer:
    return FacePreparer(parser, cascade)


@pytest.fixture(scope="module")
def astronaut(astronaut_path) -> Image.Image:
    return Image.open(astronaut_path).convert("RGB")


@pytest.fixture(scope="module")
def prepared(preparer, astronaut_path) -> PreparedFace:
    return preparer(astronaut_path)


def _central_half() -> slice:
    """Latent cells of the central square holding half the frame's area."""
    margin = 64 * (1 - 2**-0.5) / 2
    return slice(int(np.ceil(margin - 0.5)), int(np.floor(64 - margin - 0.5)) + 1)


def _png(image: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kw)
    return buffer.getvalue()


# --- the whole preparation on real photos ---------------------------------------------------


def test_astronaut_gives_one_aligned_face(prepared, astronaut_path):
    assert prepared.num_faces == 1
    assert prepared.detector == "lbp-cascade"
    assert prepared.image.size == (CROP_SIZE, CROP_SIZE) and prepared.image.mode == "RGB"
    # The astronaut's face lies in the upper-left part of the 512x512 photo, not on the suit.
    x0, y0, x1, y1 = prepared.box
    assert 128 < (x0 + x1) / 2 < 320 and 40 < (y0 + y1) / 2 < 200
    assert prepared.photo_sha256 == hashlib.sha256(Path(astronaut_path).read_bytes()).hexdigest()


def test_vit_crop_is_the_central_face_region(prepared):
    expected = np.asarray(prepared.image)[70:446, 64:440]  # DESIGN.md: pixels 64..440 x 70..446
    assert prepared.vit_crop.mode == "RGB" and prepared.vit_crop.size == (376, 376)
    assert np.array_equal(np.asarray(prepared.vit_crop), expected)


def test_masks_are_latent_sized_and_central(prepared):
    face, hair = prepared.face_mask, prepared.hair_mask
    assert face.shape == hair.shape == (64, 64) and face.dtype == hair.dtype == np.bool_
    assert face.any() and not (face & hair).any()
    assert prepared.mask_source in ("parser", "ellipse")
    centre = _central_half()
    assert face[centre, centre].sum() >= 0.8 * face.sum()


def test_aligned_face_is_centred_and_half_the_frame(prepared, cascade):
    """Detecting again on the aligned crop finds one face in the middle, about half the side."""
    faces = detect_faces(prepared.image, cascade)
    assert len(faces) == 1
    x0, y0, x1, y1 = faces[0].box
    assert abs((x0 + x1) / 2 - CROP_SIZE / 2) < 0.08 * CROP_SIZE
    assert 0.4 * CROP_SIZE < (y0 + y1) / 2 < 0.65 * CROP_SIZE
    assert 0.35 * CROP_SIZE < x1 - x0 < 0.65 * CROP_SIZE


def test_overlay_tints_only_the_masked_cells(prepared):
    overlay = np.asarray(prepared.overlay()).astype(int)
    image = np.asarray(prepared.image).astype(int)
    assert overlay.shape == image.shape
    masked = np.kron(prepared.face_mask | prepared.hair_mask, np.ones((8, 8), bool))
    assert np.abs(overlay - image)[~masked].max() <= 1
    face = np.kron(prepared.face_mask, np.ones((8, 8), bool))
    assert (overlay[face, 1] - image[face, 1]).mean() > 20  # green tint


def test_group_photo_keeps_the_largest_face(preparer, cascade, group_photo_path):
    result = preparer(group_photo_path)
    assert result.num_faces >= 3
    faces = detect_faces(load_photo(group_photo_path), cascade)
    areas = [(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]) for f in faces]
    chosen = (result.box[2] - result.box[0]) * (result.box[3] - result.box[1])
    assert chosen == pytest.approx(max(areas)) and sorted(areas)[-2] < chosen
    assert result.photo_sha256 == hashlib.sha256(Path(group_photo_path).read_bytes()).hexdigest()


def test_photo_without_face_is_refused_with_advice(preparer, cascade, no_face_path):
    assert detect_faces(load_photo(no_face_path), cascade) == []
    with pytest.raises(FaceNotFoundError) as caught:
        preparer(no_face_path)
    message = str(caught.value)
    assert "front-facing" in message and "one person" in message and "\n" not in message


@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_orientation_is_applied(preparer, astronaut, tmp_path, orientation):
    upright = astronaut.crop((0, 0, 420, 512))  # not square, so a wrong rotation shows
    turn = Image.Transpose.ROTATE_90 if orientation == 6 else Image.Transpose.ROTATE_270
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"rotated{orientation}.jpg"
    upright.transpose(turn).save(path, "JPEG", quality=95, exif=exif.tobytes())

    loaded = load_photo(path)
    assert loaded.size == upright.size
    assert np.abs(np.asarray(loaded, float) - np.asarray(upright, float)).mean() < 6
    assert preparer(path).num_faces == 1


def _variant(astronaut: Image.Image, kind: str):
    if kind == "RGBA":
        rgba = astronaut.convert("RGBA")
        alpha = np.full((512, 512), 255, np.uint8)
        alpha[:, :40] = 0  # a transparent strip must come out white
        rgba.putalpha(Image.fromarray(alpha))
        return _png(rgba)
    if kind == "L":
        return _png(astronaut.convert("L"))
    if kind == "P":
        return _png(astronaut.convert("P", palette=Image.Palette.ADAPTIVE, colors=128))
    if kind == "CMYK":
        return _png(astronaut.convert("CMYK"), "JPEG", quality=95)
    if kind == "I;16":
        grey = np.asarray(astronaut.convert("L")).astype(np.uint16) * 257
        return _png(Image.fromarray(grey))
    if kind == "gray-array":
        return np.asarray(astronaut.convert("L"))
    if kind == "float-array":
        return np.asarray(astronaut, np.float32) / 255.0
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["RGBA", "L", "P", "CMYK", "I;16", "gray-array", "float-array"])
def test_image_modes_load_as_rgb_and_find_the_face(preparer, astronaut, kind):
    photo = _variant(astronaut, kind)
    loaded = load_photo(photo)
    assert loaded.mode == "RGB" and loaded.size == (512, 512)
    pixels = np.asarray(loaded, float)
    reference = np.asarray(astronaut.convert("L") if kind in ("L", "I;16", "gray-array") else astronaut, float)
    if reference.ndim == 2:
        reference = reference[..., None]
    if kind == "RGBA":
        assert (pixels[:, :40] == 255).all()
        pixels, reference = pixels[:, 40:], reference[:, 40:]
    assert np.abs(pixels - reference).mean() < 12
    assert preparer(photo).num_faces >= 1


def test_huge_photo_is_fast_and_boxes_are_in_original_pixels(preparer, prepared, astronaut):
    side = 5000
    big = cv2.resize(np.asarray(astronaut), (side, side), interpolation=cv2.INTER_CUBIC)
    ok, jpeg = cv2.imencode(".jpg", big[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    start = time.perf_counter()
    result = preparer(jpeg.tobytes())
    elapsed = time.perf_counter() - start
    assert elapsed < 15, f"a 5000 px photo took {elapsed:.1f} s"
    assert result.num_faces == 1 and result.image.size == (CROP_SIZE, CROP_SIZE)
    scaled = np.array(result.box) * 512 / side
    small_side = prepared.box[2] - prepared.box[0]
    assert np.abs(scaled - np.array(prepared.box)).max() < 0.15 * small_side


def test_too_small_face_is_refused(preparer, astronaut):
    tiny = astronaut.resize((200, 200), Image.Resampling.LANCZOS)  # face ~40 px
    with pytest.raises(FaceNotFoundError, match="too small") as caught:
        preparer(tiny)
    assert "larger, closer photo" in str(caught.value)


# --- bad inputs -----------------------------------------------------------------------------


def test_missing_path_is_invalid_input(tmp_path):
    with pytest.raises(InvalidInputError, match="not found"):
        load_photo(tmp_path / "nope.jpg")


@pytest.mark.parametrize("content", [b"hello, I am not a photo\n", b""])
def test_text_or_empty_file_is_invalid_input(tmp_path, content):
    path = tmp_path / "photo.jpg"
    path.write_bytes(content)
    with pytest.raises(InvalidInputError) as caught:
        load_photo(path)
    assert "\n" not in str(caught.value)


class _Trap:
    """Unpickling this would create a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_is_never_unpickled(tmp_path):
    marker = tmp_path / "unpickled"
    path = tmp_path / "photo.npy"
    path.write_bytes(pickle.dumps(_Trap(marker)))
    with pytest.raises(InvalidInputError):
        load_photo(path)
    assert not marker.exists()


def test_bad_array_shape_is_invalid_input():
    with pytest.raises(InvalidInputError, match="HxW"):
        load_photo(np.zeros((4, 4, 5), np.uint8))


# --- label mapping and masks ----------------------------------------------------------------

EXPECTED_CLASSES = {
    # CelebAMask-HQ / jonathandinu names
    "background": None, "skin": "face", "nose": "face", "eye_g": "face", "l_eye": "face",
    "r_eye": "face", "l_brow": "face", "r_brow": "face", "l_ear": "face", "r_ear": "face",
    "mouth": "face", "u_lip": "face", "l_lip": "face", "hair": "hair", "hat": None,
    "ear_r": None, "neck_l": None, "neck": None, "cloth": None,
    # names used by other parsers
    "left_eye": "face", "right eyebrow": "face", "eyeglasses": "face", "upper_lip": "face",
    "Lower-Lip": "face", "inner_mouth": "face", "left_ear": "face", "earring": None,
    "necklace": None, "facial_hair": "face", "face": "face", "clothes": None, "hair_accessory": None,
}  # fmt: skip


def test_label_names_map_to_classes():
    wrong = {name: label_class(name) for name, kind in EXPECTED_CLASSES.items() if label_class(name) != kind}
    assert not wrong


def _shuffled_id2label(seed: int = 0) -> dict[int, str]:
    names = list(EXPECTED_CLASSES)
    random.Random(seed).shuffle(names)
    return dict(enumerate(names))


def test_masks_follow_label_names_not_ids():
    id2label = _shuffled_id2label()
    ids = {name: i for i, name in id2label.items()}
    labels = np.full((512, 512), ids["background"])
    labels[200:420, 170:340] = ids["skin"]  # the aligned face
    labels[60:160, 140:370] = ids["hair"]
    labels[260:300, 130:160] = ids["ear_r"]  # an earring is not an ear
    labels[280:320, 350:380] = ids["r_ear"]
    labels[450:512, 150:360] = ids["neck_l"]  # a necklace is not face
    labels[0:120, 0:80] = ids["skin"]  # someone else's cheek in the corner
    face, hair, source = masks_from_labels(labels, id2label)

    assert source == "parser" and face.shape == hair.shape == (64, 64)
    assert face[26:52, 22:42].all()  # the skin block (200..420 x 170..340)
    assert face[36:39, 44:47].all()  # right ear
    assert not face[33:37, 17:19].any()  # earring
    assert not face[57:, :].any()  # necklace
    assert not face[:15, :10].any()  # the other person
    assert hair[8:20, 18:46].all()  # the hair block (60..160 x 140..370)
    assert not hair[21:].any() and not hair[:, :16].any() and not hair[:, 48:].any()


def test_parser_failure_falls_back_to_the_face_ellipse():
    id2label = _shuffled_id2label(1)
    background = next(i for i, name in id2label.items() if name == "background")
    face, hair, source = masks_from_labels(np.full((512, 512), background), id2label)
    assert source == "ellipse" and not hair.any()
    assert 0.1 < face.mean() < 0.35 and face[38, 32]
    centre = _central_half()
    assert face[centre, centre].sum() >= 0.8 * face.sum()


# --- alignment with landmarks -----------------------------------------------------------------


class _FixedLandmarks:
    """A detector that reports given landmarks (in the pixels of the image it is handed)."""

    name = "fixed"

    def __init__(self, landmarks: np.ndarray, width: int) -> None:
        self.landmarks, self.width = landmarks, width

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        k = rgb.shape[1] / self.width
        points = self.landmarks * k
        lo, hi = points.min(axis=0), points.max(axis=0)
        pad = (hi - lo) * 0.6
        return [Detection((*(lo - pad), *(hi + pad)), points, 1.0)]


def test_landmark_alignment_undoes_rotation_and_scale(parser, astronaut, cascade):
    """Rotate and enlarge the photo; aligning by landmarks must give back the same head shot."""
    source = np.asarray(astronaut)
    reference_matrix = alignment_matrix(detect_faces(source, cascade)[0])
    reference = warp_face(source, reference_matrix).astype(float)
    landmarks = cv2.transform(TEMPLATE_512[None], cv2.invertAffineTransform(reference_matrix))[0]

    # 4x larger (so the preparer must shrink before warping) and turned by 25 degrees
    centre = landmarks.mean(axis=0)
    turn = cv2.getRotationMatrix2D(tuple(map(float, centre)), 25, 4.0)
    turn[:, 2] += 1024 - centre  # the face in the middle of a 2048 px canvas
    photo = cv2.warpAffine(source, turn, (2048, 2048), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    moved = cv2.transform(landmarks[None], turn)[0]

    result = FacePreparer(parser, _FixedLandmarks(moved, 2048))(photo)
    aligned = np.asarray(result.image, float)
    middle = np.s_[96:416, 96:416]
    error = np.abs(aligned[middle] - reference[middle]).mean()
    rotated = cv2.warpAffine(reference, cv2.getRotationMatrix2D((256, 256), 25, 1.0), (512, 512))
    assert error < 8 < np.abs(rotated[middle] - reference[middle]).mean()
    assert result.detector == "fixed"


# --- detector choice --------------------------------------------------------------------------


def test_cascade_detector_gives_boxes_only(cascade, astronaut):
    (face,) = cascade.detect(np.asarray(astronaut))
    assert face.landmarks is None and face.score >= cascade.min_neighbours


def test_cascade_ignores_the_face_like_visor_reflection(cascade, astronaut):
    """At this size the cascade fires strongly on the helmet's reflection; it has no skin."""
    small = cv2.resize(np.asarray(astronaut), (300, 300), interpolation=cv2.INTER_AREA)
    (face,) = cascade.detect(small)
    x0, y0, x1, y1 = face.box
    assert (x0 + x1) / 2 < 180 and (y0 + y1) / 2 < 135  # the face, not the visor (lower right)


def test_make_detector_none_is_the_cascade():
    assert make_detector("none").name == "lbp-cascade"


def test_make_detector_falls_back_fast_offline(monkeypatch, tmp_path, caplog):
    import insightface.app

    asked = []  # insightface must not even be asked: it would try to download the pack
    monkeypatch.setattr(insightface.app, "FaceAnalysis", lambda *a, **k: asked.append(a) or 1 / 0)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.insightface/models/buffalo_l here
    monkeypatch.chdir(tmp_path)
    start = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="stableidentity.face"):
        detector = make_detector("buffalo_l")
    assert time.perf_counter() - start < 5
    assert isinstance(detector, CascadeDetector) and detector.name == "lbp-cascade"
    assert "buffalo_l" in caplog.text and not asked


def test_broken_insightface_pack_falls_back(tmp_path):
    pack = tmp_path / "broken_pack"
    pack.mkdir()
    (pack / "det_10g.onnx").write_bytes(b"not an onnx model")
    start = time.perf_counter()
    assert make_detector(str(pack)).name == "lbp-cascade"
    assert time.perf_counter() - start < 10


def test_insightface_detector_feeds_bgr_and_reads_landmarks(monkeypatch, tmp_path):
    """With insightface's FaceAnalysis replaced by a stand-in, check what the wrapper does."""
    import insightface.app

    calls = {}

    class FakeFace:
        bbox = np.array([10.0, 20.0, 110.0, 140.0])
        kps = np.arange(10, dtype=np.float32).reshape(5, 2)
        det_score = np.float32(0.9)

    class FakeAnalysis:
        def __init__(self, name, root, allowed_modules, providers):
            calls["init"] = (name, allowed_modules, providers)

        def prepare(self, ctx_id, det_size):
            calls["prepare"] = (ctx_id, det_size)

        def get(self, bgr):
            calls["pixel"] = bgr[0, 0].tolist()
            return [FakeFace()]

    monkeypatch.setattr(insightface.app, "FaceAnalysis", FakeAnalysis)
    pack = tmp_path / "my_pack"
    pack.mkdir()
    (pack / "det.onnx").write_bytes(b"x")
    detector = InsightFaceDetector(str(pack))
    rgb = np.zeros((50, 60, 3), np.uint8)
    rgb[0, 0] = (1, 2, 3)
    (face,) = detector.detect(rgb)

    assert detector.name == "insightface:my_pack"
    assert calls["init"] == (str(pack), ["detection"], ["CPUExecutionProvider"])
    assert calls["prepare"] == (-1, (640, 640)) and calls["pixel"] == [3, 2, 1]
    assert face.box == (10.0, 20.0, 110.0, 140.0) and face.score == pytest.approx(0.9)
    assert face.landmarks.shape == (5, 2) and face.landmarks[4, 1] == 9
