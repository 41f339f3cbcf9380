"""Face preparation: one photo -> aligned 512x512 head shot, identity-encoder crop, face/hair masks.

Pipeline (DESIGN.md §1.1): load the photo (any common format, EXIF orientation applied) ->
detect faces on a downscaled copy -> keep the largest -> align it FFHQ-style (eyes level,
face about half the frame) -> parse the crop into face and hair masks at latent size.

Two detectors: insightface (SCRFD, with 5 landmarks, used when its model pack is on disk
or can be downloaded) and scikit-image's LBP frontal-face cascade, which ships inside
scikit-image and therefore always works offline (box only, rougher alignment).
"""

from __future__ import annotations

import hashlib
import io
import logging
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import FaceNotFoundError, InvalidInputError, ModelLoadError
from .hub import host_reachable

log = logging.getLogger(__name__)

CROP_SIZE = 512  # aligned head shot side (the diffusion resolution)
LATENT_SIZE = CROP_SIZE // 8  # masks live at the VAE latent resolution
VIT_BOX = (64, 70, 440, 446)  # central face region of the crop fed to the identity encoder
DETECT_MAX_SIDE = 1600  # detectors see at most this many pixels per side
MIN_FACE_SIDE = 64  # smaller faces (original pixels) carry too little identity
MIN_FACE_FRACTION = 0.02  # a parsed face mask smaller than this is not believed

# ArcFace's 112x112 five-point template (left eye, right eye, nose, mouth corners), re-scaled
# so the inter-ocular distance is ~0.23 of the side with the eye centre at (0.5, 0.45):
# an FFHQ-like framing with the face about half the frame and some hair above.
_ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)
_IOD_FRACTION = 0.23
_EYE_CENTRE = np.array([0.5, 0.45])


def _make_template(size: int = CROP_SIZE) -> np.ndarray:
    eyes = _ARCFACE_112[:2].mean(axis=0)
    iod = np.linalg.norm(_ARCFACE_112[1] - _ARCFACE_112[0])
    return ((_ARCFACE_112 - eyes) * (_IOD_FRACTION / iod) + _EYE_CENTRE) * size


TEMPLATE_512 = _make_template()

# Ellipses in crop-relative units (centre x, centre y, semi-axis x, semi-axis y).
# HEAD: generous region holding the aligned person's face and ears; parser "face" pixels
# outside it belong to someone else. FACE: the face oval itself, used when parsing fails.
HEAD_ELLIPSE = (0.5, 0.52, 0.35, 0.42)
FACE_ELLIPSE = (0.5, 0.55, 0.20, 0.30)

_UPLOAD_HINT = (
    "Please upload a clear, well-lit, front-facing photo of one person's face "
    "(head and shoulders, face not covered, at least a few hundred pixels wide)."
)


# --- loading -------------------------------------------------------------------------------


def load_photo(photo: Any) -> Image.Image:
    """Decode a photo (path, bytes, PIL image or numpy array) into an upright 8-bit RGB image."""
    return _read_photo(photo)[0]


def _read_photo(photo: Any) -> tuple[Image.Image, str]:
    """Return the RGB image and the SHA-256 of the file bytes (or of the pixels)."""
    if isinstance(photo, (str, Path)):
        data = _read_file(Path(photo).expanduser())
        return _decode(data, f"'{photo}'"), hashlib.sha256(data).hexdigest()
    if isinstance(photo, (bytes, bytearray, memoryview)):
        data = bytes(photo)
        if not data:
            raise InvalidInputError("the photo is empty (0 bytes): upload a JPEG or PNG photo")
        return _decode(data, "the uploaded photo"), hashlib.sha256(data).hexdigest()
    if isinstance(photo, Image.Image):
        image = _to_rgb(photo)
    elif isinstance(photo, np.ndarray):
        image = _array_to_rgb(photo)
    else:
        raise InvalidInputError(
            f"unsupported photo type {type(photo).__name__}: give a file path, bytes, a PIL image or an HxWx3 array"
        )
    return image, _pixel_sha256(image)


def _read_file(path: Path) -> bytes:
    try:
        if not path.exists():
            raise InvalidInputError(f"photo not found: '{path}'")
        if not path.is_file():
            raise InvalidInputError(f"'{path}' is not a file: give the path of a photo")
        data = path.read_bytes()
    except OSError as error:  # unreadable, or a "path" that is really something else
        raise InvalidInputError(f"could not read the photo '{str(path)[:200]}': {error.strerror or error}") from None
    if not data:
        raise InvalidInputError(f"the photo '{path}' is empty (0 bytes)")
    return data


def _decode(data: bytes, what: str) -> Image.Image:
    """Decode image bytes with PIL only (no pickle, no numpy loaders)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return _to_rgb(image)
    except Image.DecompressionBombError:
        raise InvalidInputError(f"{what} is too large to be a photo: resize it below 50 megapixels") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as error:
        reason = str(error).splitlines()[0][:120] if str(error) else type(error).__name__
        raise InvalidInputError(f"{what} is not a readable image ({reason}): upload a JPEG or PNG photo") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    """Upright 8-bit RGB: EXIF rotation applied, transparency composited on white."""
    if image.width == 0 or image.height == 0:
        raise InvalidInputError("the photo has no pixels (0 width or height)")
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return _array_to_rgb(np.asarray(image))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _array_to_rgb(array: np.ndarray) -> Image.Image:
    """HxW / HxWx1 / HxWx3 / HxWx4 arrays of uint8, uint16 or float (0..1 or 0..255) to RGB."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)) or array.size == 0:
        raise InvalidInputError(f"a photo array must be HxW or HxWx3 (got shape {tuple(array.shape)})")
    if array.dtype != np.uint8:
        array = _to_uint8(array)
    if array.ndim == 2:
        return Image.fromarray(array).convert("RGB")
    if array.shape[2] == 4:
        return _to_rgb(Image.fromarray(np.ascontiguousarray(array)))
    return Image.fromarray(np.ascontiguousarray(array))


def _to_uint8(array: np.ndarray) -> np.ndarray:
    values = array.astype(np.float64)
    if not np.isfinite(values).all():
        raise InvalidInputError("the photo array holds NaN or infinite values")
    if array.dtype == np.bool_:
        scale = 255.0
    elif np.issubdtype(array.dtype, np.floating):
        scale = 255.0 if values.max(initial=0) <= 1.0 else 1.0
    else:  # 16/32-bit integers: 16-bit range unless the values say 8-bit
        scale = 1.0 if values.max(initial=0) <= 255 else 255.0 / 65535.0
    return np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)


def _pixel_sha256(image: Image.Image) -> str:
    """Hash of the decoded pixels (size first, so reshaped data cannot collide)."""
    digest = hashlib.sha256(f"{image.width}x{image.height}:".encode())
    digest.update(np.asarray(image, dtype=np.uint8).tobytes())
    return digest.hexdigest()


# --- detection -------------------------------------------------------------------------------


@dataclass
class Detection:
    """One face: box (x0, y0, x1, y1) in original pixels, optional 5 landmarks, detector score."""

    box: tuple[float, float, float, float]
    landmarks: np.ndarray | None  # (5, 2): left eye, right eye, nose, left/right mouth corner
    score: float

    @property
    def side(self) -> float:
        return min(self.box[2] - self.box[0], self.box[3] - self.box[1])

    @property
    def area(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])

    def scaled(self, factor: float) -> "Detection":
        landmarks = None if self.landmarks is None else self.landmarks * factor
        return Detection(_as_box(np.asarray(self.box) * factor), landmarks, self.score)


def _as_box(values: Sequence[float] | np.ndarray) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (float(v) for v in values)
    return x0, y0, x1, y1


class Detector(Protocol):
    name: str

    def detect(self, rgb: np.ndarray) -> list[Detection]: ...


class InsightFaceDetector:
    """insightface's SCRFD detector (boxes + 5 landmarks) from a model pack, on the CPU.

    Loads only from disk, or downloads when github.com answers within seconds; otherwise it
    raises ModelLoadError at once, so offline machines never wait on a download.
    """

    def __init__(self, pack: str = "buffalo_l", root: str = "~/.insightface", det_size: int = 640) -> None:
        model_dir = _insightface_pack_dir(pack, root)
        if model_dir is None and not host_reachable("github.com"):
            raise ModelLoadError(
                f"insightface model pack '{pack}' is not in {Path(root).expanduser() / 'models'} "
                "and github.com is out of reach (or HF_HUB_OFFLINE is set)"
            )
        try:
            from insightface.app import FaceAnalysis

            # insightface downloads without a timeout; a stalled transfer must fail, not hang.
            with _socket_timeout(30.0 if model_dir is None else None):
                self._app = FaceAnalysis(
                    name=str(model_dir) if model_dir else pack,
                    root=str(Path(root).expanduser()),
                    allowed_modules=["detection"],
                    providers=["CPUExecutionProvider"],
                )
            self._app.prepare(ctx_id=-1, det_size=(det_size, det_size))
        except Exception as error:  # noqa: BLE001 - any insightface failure means "use the fallback"
            raise ModelLoadError(f"insightface model pack '{pack}' could not be loaded: {error}") from error
        self.name = f"insightface:{Path(pack).name}"

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        faces = self._app.get(bgr)
        return [
            Detection(
                _as_box(face.bbox[:4]),
                None if face.kps is None else np.asarray(face.kps, dtype=np.float64).reshape(5, 2),
                float(face.det_score),
            )
            for face in faces
        ]


@contextmanager
def _socket_timeout(seconds: float | None) -> Iterator[None]:
    """Give sockets opened inside the block a default timeout (None: leave it alone)."""
    if seconds is None:
        yield
        return
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _insightface_pack_dir(pack: str, root: str) -> Path | None:
    """The pack's folder if it already holds models: a folder path or root/models/<pack>."""
    for candidate in (Path(pack).expanduser(), Path(root).expanduser() / "models" / pack):
        if candidate.is_dir() and (any(candidate.glob("*.onnx")) or (candidate / "manifest.json").is_file()):
            return candidate
    return None


class CascadeDetector:
    """scikit-image's LBP frontal-face cascade: always available offline, boxes only.

    The raw cascade fires many times around each face and now and then on texture, so hits
    are grouped by overlap and a group counts as a face only with enough neighbours. In colour
    photos, groups without skin-coloured pixels are dropped when some other group has them
    (e.g. the face-like reflection in a helmet visor).
    """

    name = "lbp-cascade"

    def __init__(
        self,
        max_side: int = 800,
        scale_factor: float = 1.1,
        step_ratio: float = 1.0,
        min_window: int = 24,
        min_neighbours: int = 8,
        group_iou: float = 0.5,
        min_skin: float = 0.25,
    ) -> None:
        from skimage.data import lbp_frontal_face_cascade_filename
        from skimage.feature import Cascade

        self._cascade = Cascade(lbp_frontal_face_cascade_filename())
        self.max_side = max_side
        self.scale_factor = scale_factor
        self.step_ratio = step_ratio
        self.min_window = min_window
        self.min_neighbours = min_neighbours
        self.group_iou = group_iou
        self.min_skin = min_skin

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        small, factor = _downscale(rgb, self.max_side)
        hits = self._raw_hits(small) / factor
        groups = [g for g in _group_boxes(hits, self.group_iou) if len(g) >= self.min_neighbours]
        detections = [Detection(_as_box(hits[g].mean(axis=0)), None, float(len(g))) for g in groups]
        detections = _drop_contained(detections)
        return _prefer_skin(rgb, detections, self.min_skin)

    def _raw_hits(self, rgb: np.ndarray) -> np.ndarray:
        """Every window the cascade accepts, as (N, 4) x0, y0, x1, y1 (no merging)."""
        gray = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
        side = min(gray.shape)
        if side < self.min_window:
            return np.zeros((0, 4))
        found = self._cascade.detect_multi_scale(
            img=gray,
            scale_factor=self.scale_factor,
            step_ratio=self.step_ratio,
            min_size=(self.min_window, self.min_window),
            max_size=(side, side),
            min_neighbor_number=1,
            intersection_score_threshold=1.1,  # > 1: the cascade merges nothing, we group below
        )
        boxes = [(d["c"], d["r"], d["c"] + d["width"], d["r"] + d["height"]) for d in found]
        return np.array(boxes, dtype=np.float64).reshape(-1, 4)


def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def _group_boxes(boxes: np.ndarray, iou: float) -> list[np.ndarray]:
    """Connected components of the 'IoU above threshold' graph: one group per object."""
    if len(boxes) == 0:
        return []
    from scipy.sparse.csgraph import connected_components

    _, labels = connected_components(_iou_matrix(boxes, boxes) > iou, directed=False)
    return [np.flatnonzero(labels == k) for k in range(labels.max() + 1)]


def _drop_contained(detections: list[Detection]) -> list[Detection]:
    """Drop a group lying mostly inside a stronger one (a second response on the same face)."""
    kept: list[Detection] = []
    for det in sorted(detections, key=lambda d: -d.score):
        inside = False
        for other in kept:
            x0, y0 = max(det.box[0], other.box[0]), max(det.box[1], other.box[1])
            x1, y1 = min(det.box[2], other.box[2]), min(det.box[3], other.box[3])
            if max(0.0, x1 - x0) * max(0.0, y1 - y0) >= 0.5 * det.area:
                inside = True
                break
        if not inside:
            kept.append(det)
    return kept


def skin_fraction(rgb: np.ndarray, box: Sequence[float]) -> float:
    """Share of skin-coloured pixels (YCrCb rule) in the central part of a box; 0 for grey images."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    xa, xb = int(max(0, x0 + 0.2 * w)), int(min(rgb.shape[1], x1 - 0.2 * w))
    ya, yb = int(max(0, y0 + 0.2 * h)), int(min(rgb.shape[0], y1 - 0.2 * h))
    patch = np.ascontiguousarray(rgb[ya:yb, xa:xb])
    if patch.size == 0:
        return 0.0
    ycc = cv2.cvtColor(patch, cv2.COLOR_RGB2YCrCb).astype(np.int16)
    y, cr, cb = ycc[..., 0], ycc[..., 1], ycc[..., 2]
    skin = (y > 40) & (cr >= 133) & (cr <= 180) & (cb >= 77) & (cb <= 135)
    return float(skin.mean())


def _prefer_skin(rgb: np.ndarray, detections: list[Detection], min_skin: float) -> list[Detection]:
    """Keep only skin-coloured candidates, unless none is (grey photo, strong colour cast)."""
    skinned = [d for d in detections if skin_fraction(rgb, d.box) >= min_skin]
    return skinned if skinned else detections


def make_detector(insightface: str = "none") -> Detector:
    """The preset's detector: insightface when it loads, else the offline cascade (logged)."""
    choice = (insightface or "none").strip()
    if choice.lower() in ("none", "off", "cascade", ""):
        return CascadeDetector()
    try:
        return InsightFaceDetector(choice)
    except Exception as error:  # noqa: BLE001 - any failure falls back to the offline detector
        log.warning(
            "insightface detector '%s' unavailable (%s); using scikit-image's LBP cascade "
            "(no landmarks: alignment is rougher)",
            choice,
            str(error).splitlines()[0] if str(error) else type(error).__name__,
        )
        return CascadeDetector()


def _downscale(rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """A copy whose longer side is at most max_side, and the factor applied (<= 1)."""
    factor = min(1.0, max_side / max(rgb.shape[:2]))
    if factor >= 1.0:
        return rgb, 1.0
    size = (max(1, round(rgb.shape[1] * factor)), max(1, round(rgb.shape[0] * factor)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), factor


def detect_faces(
    photo: Image.Image | np.ndarray, detector: Detector, max_side: int = DETECT_MAX_SIDE
) -> list[Detection]:
    """Faces in original pixels, largest first; the detector only sees a downscaled copy."""
    rgb = np.asarray(photo.convert("RGB") if isinstance(photo, Image.Image) else photo)
    small, factor = _downscale(rgb, max_side)
    detections = [d.scaled(1.0 / factor) for d in detector.detect(small)]
    return sorted(detections, key=lambda d: -d.area)


# --- alignment -------------------------------------------------------------------------------


def similarity_from_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares rotation + uniform scale + translation mapping src onto dst, as a 2x3 matrix."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    p, q = src - src_mean, dst - dst_mean
    norm = (p**2).sum()
    a = (p[:, 0] * q[:, 0] + p[:, 1] * q[:, 1]).sum() / norm
    b = (p[:, 0] * q[:, 1] - p[:, 1] * q[:, 0]).sum() / norm
    rot = np.array([[a, -b], [b, a]])
    return np.hstack([rot, (dst_mean - rot @ src_mean)[:, None]])


def alignment_matrix(detection: Detection, size: int = CROP_SIZE) -> np.ndarray:
    """2x3 matrix from original pixels to the aligned crop.

    With landmarks: fit them to the template. With a box only: a square of twice the box
    width around it, nudged up so the eyes land near the template's eye line.
    """
    if detection.landmarks is not None:
        return similarity_from_points(detection.landmarks, _make_template(size))
    x0, y0, x1, y1 = detection.box
    width = max(x1 - x0, y1 - y0)
    side = 2.0 * width
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 - 0.05 * width
    scale = size / side
    return np.array([[scale, 0.0, size / 2 - scale * cx], [0.0, scale, size / 2 - scale * cy]])


def warp_face(rgb: np.ndarray, matrix: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """Warp to size x size with reflected borders; big sources are cropped and area-shrunk first."""
    matrix = matrix.astype(np.float64).copy()
    inverse = cv2.invertAffineTransform(matrix)
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64) @ inverse.T
    x0, y0 = np.floor(corners.min(axis=0)).astype(int) - 2
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int) + 2
    x0, y0 = max(x0, 0), max(y0, 0)
    x1, y1 = min(x1, rgb.shape[1]), min(y1, rgb.shape[0])
    if x1 - x0 < 2 or y1 - y0 < 2:  # the region lies outside the photo: use all of it
        x0, y0, x1, y1 = 0, 0, rgb.shape[1], rgb.shape[0]
    region = rgb[y0:y1, x0:x1]
    matrix[:, 2] += matrix[:, :2] @ np.array([x0, y0], np.float64)

    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    if scale < 0.8:  # shrink with area averaging first, so the warp does not alias
        w = max(2, round(region.shape[1] * scale))
        h = max(2, round(region.shape[0] * scale))
        fx, fy = w / region.shape[1], h / region.shape[0]
        region = cv2.resize(region, (w, h), interpolation=cv2.INTER_AREA)
        matrix[:, 0] /= fx
        matrix[:, 1] /= fy
    return cv2.warpAffine(
        np.ascontiguousarray(region), matrix, (size, size), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT
    )


# --- parsing ---------------------------------------------------------------------------------

# CelebAMask-HQ abbreviations whose meaning substring matching would get wrong:
# 'ear_r' is an earring and 'neck_l' a necklace, while 'r_ear'/'l_ear' are ears.
_EXACT_CLASSES = {
    "eye_g": "face", "l_eye": "face", "r_eye": "face", "l_brow": "face", "r_brow": "face",
    "l_ear": "face", "r_ear": "face", "u_lip": "face", "l_lip": "face",
    "ear_r": None, "neck_l": None, "hair": "hair",
}  # fmt: skip
_NOT_FACE_WORDS = {
    "background", "bg", "neck", "cloth", "clothes", "clothing", "hat", "cap", "earring", "earrings",
    "necklace", "jewelry", "jewellery", "body", "torso", "shoulder", "accessory", "accessories",
}  # fmt: skip
_FACIAL_HAIR_WORDS = {"beard", "moustache", "mustache", "facial"}
_FACE_WORDS = {
    "skin", "face", "nose", "eye", "eyes", "brow", "brows", "eyebrow", "eyebrows", "glasses",
    "eyeglasses", "eyeglass", "spectacles", "ear", "ears", "mouth", "lip", "lips", "teeth",
    "tooth", "tongue", "beard", "moustache", "mustache",
}  # fmt: skip


def label_class(name: str) -> str | None:
    """'face', 'hair' or None for one parser label name (CelebAMask-HQ, BiSeNet and similar)."""
    key = "_".join(name.strip().lower().replace("-", " ").replace(".", " ").split())
    if key in _EXACT_CLASSES:
        return _EXACT_CLASSES[key]
    words = set(key.split("_"))
    if words & _NOT_FACE_WORDS:
        return None
    if "hair" in words:
        return "face" if words & _FACIAL_HAIR_WORDS else "hair"
    return "face" if words & _FACE_WORDS else None


def label_lookup(id2label: dict[Any, str], num_labels: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Boolean lookup tables (face, hair) indexed by label id, built from the label names."""
    ids = {int(k): v for k, v in id2label.items()}
    size = max(max(ids, default=-1) + 1, num_labels or 0)
    face, hair = np.zeros(size, bool), np.zeros(size, bool)
    for index, name in ids.items():
        kind = label_class(str(name))
        face[index] = kind == "face"
        hair[index] = kind == "hair"
    return face, hair


def ellipse_mask(ellipse: tuple[float, float, float, float], size: int = CROP_SIZE) -> np.ndarray:
    """Boolean size x size mask of an ellipse given in crop-relative units."""
    cx, cy, rx, ry = ellipse
    coords = (np.arange(size) + 0.5) / size
    return ((coords[None, :] - cx) / rx) ** 2 + ((coords[:, None] - cy) / ry) ** 2 <= 1.0


def to_latent_mask(mask: np.ndarray, latent: int = LATENT_SIZE) -> np.ndarray:
    """Area-average a square boolean mask down to latent x latent and binarise at 0.5."""
    block = mask.shape[0] // latent
    cover = mask[: block * latent, : block * latent].reshape(latent, block, latent, block).mean(axis=(1, 3))
    return cover >= 0.5


def parse_labels(parser: Any, crop: Image.Image) -> np.ndarray:
    """Per-pixel label ids (crop size) from the SegFormer parser, on its device and dtype."""
    import torch

    model = parser.model
    reference = next(model.parameters())
    inputs = parser.processor(images=crop, return_tensors="pt")
    pixels = inputs["pixel_values"].to(device=reference.device, dtype=reference.dtype)
    with torch.no_grad():
        logits = model(pixel_values=pixels).logits
        logits = torch.nn.functional.interpolate(
            logits.float(), size=(crop.height, crop.width), mode="bilinear", align_corners=False
        )
    return logits.argmax(dim=1)[0].cpu().numpy()


def masks_from_labels(labels: np.ndarray, id2label: dict[Any, str]) -> tuple[np.ndarray, np.ndarray, str]:
    """Latent-size (face, hair) masks and their source ('parser' or 'ellipse') from a label map.

    Face pixels outside the generous head ellipse belong to other people and are dropped; a
    face mask that is then implausibly small means the parser failed, so the face oval is used.
    """
    face_lut, hair_lut = label_lookup(id2label, int(labels.max()) + 1)
    size = labels.shape[0]
    face = face_lut[labels] & ellipse_mask(HEAD_ELLIPSE, size)
    hair = hair_lut[labels]
    face_latent = to_latent_mask(face, size // 8)
    source = "parser"
    if face_latent.mean() < MIN_FACE_FRACTION:
        face_latent = to_latent_mask(ellipse_mask(FACE_ELLIPSE, size), size // 8)
        source = "ellipse"
    hair_latent = to_latent_mask(hair, size // 8) & ~face_latent
    return face_latent, hair_latent, source


# --- the whole preparation -----------------------------------------------------------------


@dataclass
class PreparedFace:
    """Everything later steps need from the user's photo."""

    image: Image.Image  # 512x512 RGB aligned head shot
    vit_crop: Image.Image  # central face region for the identity encoder (its processor resizes)
    face_mask: np.ndarray  # bool (64, 64)
    hair_mask: np.ndarray  # bool (64, 64)
    num_faces: int
    box: tuple[float, float, float, float]  # chosen face, original pixels
    detector: str
    mask_source: str  # "parser" or "ellipse"
    photo_sha256: str

    def overlay(self, alpha: float = 0.45) -> Image.Image:
        """The head shot with the face mask tinted green and the hair mask blue, for the UI."""
        rgb = np.asarray(self.image.convert("RGB"), dtype=np.float32)
        repeat = rgb.shape[0] // self.face_mask.shape[0]
        for mask, colour in ((self.face_mask, (0, 220, 0)), (self.hair_mask, (30, 90, 255))):
            big = np.kron(mask.astype(np.uint8), np.ones((repeat, repeat), np.uint8)).astype(bool)
            rgb[big] = (1 - alpha) * rgb[big] + alpha * np.array(colour, np.float32)
        return Image.fromarray(np.clip(rgb + 0.5, 0, 255).astype(np.uint8))


class FacePreparer:
    """Photo -> PreparedFace: load, detect on a downscaled copy, keep the largest, align, parse."""

    def __init__(
        self,
        parser: Any,
        detector: Detector | None = None,
        detect_max_side: int = DETECT_MAX_SIDE,
        min_face_side: int = MIN_FACE_SIDE,
    ) -> None:
        self.parser = parser  # loaders.FaceParser
        self.detector = detector if detector is not None else CascadeDetector()
        self.detect_max_side = detect_max_side
        self.min_face_side = min_face_side

    def __call__(self, photo: Any) -> PreparedFace:
        image, sha = _read_photo(photo)
        rgb = np.asarray(image)
        faces = detect_faces(rgb, self.detector, self.detect_max_side)
        chosen = self._choose(faces, image.size)
        crop = Image.fromarray(warp_face(rgb, alignment_matrix(chosen)))
        labels = parse_labels(self.parser, crop)
        face_mask, hair_mask, source = masks_from_labels(labels, self.parser.model.config.id2label)
        return PreparedFace(
            image=crop,
            vit_crop=crop.crop(VIT_BOX),
            face_mask=face_mask,
            hair_mask=hair_mask,
            num_faces=len(faces),
            box=_as_box(chosen.box),
            detector=self.detector.name,
            mask_source=source,
            photo_sha256=sha,
        )

    def _choose(self, faces: list[Detection], size: tuple[int, int]) -> Detection:
        if not faces:
            raise FaceNotFoundError(f"no face found in the photo ({size[0]}x{size[1]} px). {_UPLOAD_HINT}")
        largest = max(faces, key=lambda d: d.area)
        if largest.side < self.min_face_side:
            raise FaceNotFoundError(
                f"the face is too small ({largest.side:.0f} px wide, at least {self.min_face_side} px needed). "
                "Please upload a larger, closer photo of the face (head and shoulders filling most of the picture)."
            )
        return largest
