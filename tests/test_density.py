"""inference/density.py and --save_density: density maps sum to the count, spread each person by the sigma
asked for or by the distance to the nearest heads, and are written beside the counts."""
import csv

import cv2
import numpy as np
import pytest

import run_test
from inference.density import LONE_SIGMA, SPREAD, adaptive_sigmas, density_map
from helpers import counting_checkpoint


def test_a_map_sums_to_the_count_with_people_at_the_border_and_beyond_it():
    points = np.array([[0.2, 0.2], [99.9, 59.9], [50, 30], [-20, 10], [130, 70], [50.5, 0.5]])
    for sigma in (None, 1.0, 6.0, 30.0):
        density = density_map(points, 60, 100, sigma)
        assert density.shape == (60, 100) and density.dtype == np.float32
        # float32 values summed in float64: each of the 6000 values is off by at most 2^-24 of itself.
        assert abs(float(density.sum(dtype=np.float64)) - len(points)) < 1e-5 * len(points)
    assert density_map(np.zeros((0, 2)), 60, 100).sum() == 0


def test_one_person_is_a_gaussian_of_the_sigma_asked_for():
    density = density_map(np.array([[40.5, 30.5]]), 61, 81, sigma=4.0)
    ys, xs = np.mgrid[0:61, 0:81] + 0.5
    gaussian = np.exp(-((xs - 40.5) ** 2 + (ys - 30.5) ** 2) / (2 * 4.0 ** 2))
    window = gaussian * ((np.abs(xs - 40.5) <= 12.5) & (np.abs(ys - 30.5) <= 12.5))  # cut at 3 sigma
    np.testing.assert_allclose(density, window / window.sum(), rtol=1e-5, atol=1e-9)
    assert np.unravel_index(density.argmax(), density.shape) == (30, 40)


def test_adaptive_sigma_follows_the_distance_to_the_nearest_heads():
    # A row of heads 10 px apart, and a far one 200 px apart: its neighbours are far, so its sigma is larger.
    row = [[10.0 * k, 0.0] for k in range(6)]
    sigmas = adaptive_sigmas(np.array(row))
    # The middle heads' 3 nearest are at 10, 10 and 20 px: 0.3 * 40 / 3.
    np.testing.assert_allclose(sigmas[2:4], SPREAD * 40 / 3)
    assert adaptive_sigmas(np.array(row + [[250.0, 0.0]]))[-1] > sigmas.max()
    assert adaptive_sigmas(np.array([[5.0, 5.0]])).tolist() == [LONE_SIGMA]


def test_run_test_writes_maps_that_sum_to_each_pictures_count(tmp_path, capsys):
    counting_checkpoint(tmp_path / "model.pth")
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    rng = np.random.default_rng(2)
    for name in ("a.png", "b.jpg"):
        cv2.imwrite(str(pictures / name), rng.integers(0, 256, size=(90, 130, 3), dtype=np.uint8))
    out = tmp_path / "out"
    assert run_test.main(["--weight_path", str(tmp_path / "model.pth"), "--input", str(pictures),
                          "--output_dir", str(out), "--save_density", "--density_sigma", "3"]) == 0
    with open(out / "counts.csv") as file:
        rows = list(csv.DictReader(file))
    for row in rows:
        stem = row["image"].rsplit(".", 1)[0]
        density = np.load(out / "density" / f"{stem}.npy")
        assert density.shape == (90, 130) and int(row["count"]) > 0
        assert abs(float(density.sum(dtype=np.float64)) - int(row["count"])) < 1e-5 * int(row["count"])
        assert cv2.imread(str(out / "density" / f"{stem}.jpg")).shape == (90, 130, 3)


@pytest.mark.parametrize("flags,message", [
    (["--save_density"], "--save_density writes density maps: give --output_dir"),
    (["--density_sigma", "0"], "argument --density_sigma: must be positive")])
def test_density_flags_are_checked(flags, message, capsys):
    with pytest.raises(SystemExit) as stop:
        run_test.main(["--weight_path", "w.pth", "--input", "p.png"] + flags)
    assert stop.value.code == 2 and message in capsys.readouterr().err
