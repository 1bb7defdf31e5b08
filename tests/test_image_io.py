"""crowd_datasets/image_io.py: decoding real files as OpenCV does, and the one naming rule of outputs and
records."""
from pathlib import Path

import cv2
import numpy as np
import pytest

from crowd_datasets.image_io import read_rgb, unique_names
from helpers import REAL_SAMPLES


@pytest.mark.reference_fixtures
def test_png_with_alpha_named_jpg_decodes_like_cv2_imread(tmp_path):
    real = REAL_SAMPLES / "Rain_IMG_0045.jpg"
    assert cv2.imread(str(real), cv2.IMREAD_UNCHANGED).shape[2] == 4
    np.testing.assert_array_equal(read_rgb(real), cv2.imread(str(real))[:, :, ::-1])
    rng = np.random.default_rng(0)
    bgra = rng.integers(0, 256, size=(20, 30, 4), dtype=np.uint8)
    path = tmp_path / "alpha.jpg"
    path.write_bytes(cv2.imencode(".png", bgra)[1].tobytes())
    rgb = read_rgb(path)
    assert rgb.shape == (20, 30, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, bgra[:, :, 2::-1])


@pytest.mark.parametrize("paths,names", [
    # One folder (run_test.py --input): the suffix tells namesakes apart, then a counter.
    (["d/a.jpg", "d/a.png", "d/a_jpg.png"], ["a_jpg", "a_png", "a_jpg_2"]),
    # Datasets of several parts (Demo_Weather): the nearest folder that differs.
    (["c/Demo_Hazy/test_data/images/IMG_1.jpg", "c/Demo_Rainy/test_data/images/IMG_1.jpg",
      "c/Demo_Hazy/test_data/images/IMG_2.jpg"], ["Demo_Hazy_IMG_1", "Demo_Rainy_IMG_1", "IMG_2"]),
    (["x/a.jpg", "y/a.jpg", "y/a.png"], ["x_a", "y_a_jpg", "y_a_png"]),
])
def test_names_are_the_stem_unless_files_share_it(paths, names):
    assert unique_names(paths) == names
    assert unique_names([Path("/abs") / path for path in paths]) == names, "no absolute path leaks into names"
