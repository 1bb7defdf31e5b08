import numpy as np
import pytest
import scipy.io

from crowd_datasets.annotations import points_outside, read_points


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_two_integer_columns(tmp_path):
    points = read_points(write(tmp_path, "IMG_1.txt", "10 20\n3 4\n"))
    assert points.dtype == np.float32
    np.testing.assert_array_equal(points, [[10, 20], [3, 4]])


def test_float_columns_and_commas(tmp_path):
    path = write(tmp_path, "IMG_2.txt", "10.25 20.5\n1.5,2.75\n7.0, 8.125\n")
    np.testing.assert_array_equal(read_points(path), [[10.25, 20.5], [1.5, 2.75], [7.0, 8.125]])


def test_jhu_six_columns_keep_only_x_y(tmp_path):
    path = write(tmp_path, "0001.txt", "100 200 12 14 0 0\n5.5 6.5 3 3 1 2\n")
    points = read_points(path)
    assert points.shape == (2, 2)
    np.testing.assert_array_equal(points, [[100, 200], [5.5, 6.5]])


def test_blank_lines_skipped(tmp_path):
    path = write(tmp_path, "IMG_3.txt", "\n1 2\n   \n\n3 4\n\n")
    np.testing.assert_array_equal(read_points(path), [[1, 2], [3, 4]])


def test_empty_file_has_zero_points(tmp_path):
    points = read_points(write(tmp_path, "IMG_4.txt", ""))
    assert points.shape == (0, 2)
    assert points.dtype == np.float32


@pytest.mark.parametrize("bad_line", ["7", "7 abc", "x y", "nan 3"])
def test_malformed_line_names_file_and_line(tmp_path, bad_line):
    path = write(tmp_path, "IMG_5.txt", f"1 2\n\n{bad_line}\n5 6\n")
    with pytest.raises(ValueError) as error:
        read_points(path)
    message = str(error.value)
    assert str(path) in message
    assert "line 3" in message
    assert bad_line in message


def test_missing_file_names_path(tmp_path):
    path = tmp_path / "nowhere" / "IMG_6.txt"
    with pytest.raises(FileNotFoundError) as error:
        read_points(path)
    assert str(path) in str(error.value)
    assert "annotation" in str(error.value)


def test_unknown_suffix_lists_supported(tmp_path):
    path = write(tmp_path, "IMG_7.json", "[]")
    with pytest.raises(ValueError) as error:
        read_points(path)
    assert str(path) in str(error.value)
    assert ".txt" in str(error.value) and ".mat" in str(error.value)


def save_shanghaitech_mat(path, location):
    """Write a .mat laid out like ShanghaiTech's GT_IMG_n.mat: a 1x1 cell holding a 1x1 struct."""
    cell = np.empty((1, 1), dtype=object)
    cell[0, 0] = {"location": location, "number": np.array([[len(location)]], dtype=np.uint16)}
    scipy.io.savemat(path, {"image_info": cell})


def test_shanghaitech_mat(tmp_path):
    location = np.array([[10.5, 20.25], [30.0, 40.75], [0.5, 1.5]])
    path = tmp_path / "GT_IMG_1.mat"
    save_shanghaitech_mat(path, location)

    raw = scipy.io.loadmat(path)["image_info"]
    assert raw.shape == (1, 1) and raw.dtype == object
    assert raw[0, 0].dtype.names == ("location", "number")
    np.testing.assert_array_equal(raw[0, 0][0, 0][0], location)

    points = read_points(path)
    assert points.dtype == np.float32
    np.testing.assert_array_equal(points, location.astype(np.float32))


def test_shanghaitech_mat_without_people(tmp_path):
    path = tmp_path / "GT_IMG_4.mat"
    save_shanghaitech_mat(path, np.zeros((0, 2)))
    points = read_points(path)
    assert points.shape == (0, 2) and points.dtype == np.float32


def test_mat_without_image_info(tmp_path):
    path = tmp_path / "GT_IMG_2.mat"
    scipy.io.savemat(path, {"annPoints": np.array([[1.0, 2.0]])})
    with pytest.raises(ValueError) as error:
        read_points(path)
    assert str(path) in str(error.value)
    assert "image_info" in str(error.value)


def test_mat_with_wrong_image_info_structure(tmp_path):
    path = tmp_path / "GT_IMG_3.mat"
    scipy.io.savemat(path, {"image_info": np.array([[1.0, 2.0, 3.0]])})
    with pytest.raises(ValueError) as error:
        read_points(path)
    assert str(path) in str(error.value)
    assert "image_info" in str(error.value)


def test_points_outside():
    points = np.array(
        [
            [0.0, 0.0],  # top-left corner pixel: inside
            [99.9, 49.9],  # last pixel: inside
            [100.0, 10.0],  # x == width: outside
            [10.0, 50.0],  # y == height: outside
            [-0.1, 10.0],
            [10.0, -3.0],
        ],
        dtype=np.float32,
    )
    assert points_outside(points, width=100, height=50) == 4
    assert points_outside(np.zeros((0, 2), dtype=np.float32), width=100, height=50) == 0
