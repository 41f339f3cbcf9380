"""Shared fixtures: the tiny offline preset and real photos shipped inside installed packages."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def package_file(package: str, *parts: str) -> Path:
    """A data file that ships inside an installed package (found without importing it)."""
    spec = importlib.util.find_spec(package)
    return Path(list(spec.submodule_search_locations)[0]).joinpath(*parts)


@pytest.fixture(scope="session")
def astronaut_path() -> Path:
    return package_file("skimage", "data", "astronaut.png")


@pytest.fixture(scope="session")
def group_photo_path() -> Path:
    return package_file("insightface", "data", "images", "t1.jpg")


@pytest.fixture(scope="session")
def no_face_path(tmp_path_factory) -> Path:
    """A real photo with no face in it (scikit-image's coffee cup)."""
    from skimage import data

    path = tmp_path_factory.mktemp("photos") / "coffee.png"
    Image.fromarray(np.asarray(data.coffee())).save(path)
    return path


@pytest.fixture(scope="session")
def manager():
    from stableidentity.manager import ModelManager

    return ModelManager("tiny", device="cpu")


@pytest.fixture(scope="session")
def prepared_face(manager, astronaut_path):
    return manager.face_preparer()(astronaut_path)
