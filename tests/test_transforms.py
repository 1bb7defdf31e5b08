"""Joint transforms must move head points together with the pixels they sit on.

Every ground-truth point gets a mark painted under it: an id value in one channel and a presence
flag in another. The clean image is painted differently (other channels, ids reversed), so a
clean image that was not transformed exactly like the degraded one reads back other ids.
After a transform, the pixel ``(floor(y), floor(x))`` under every output point must carry the
mark of the point it came from. Crops and flips are checked on single-pixel marks (exact);
bilinear scaling on 7x7 blocks, which are wide enough that the output pixel under a moved point
only blends pixels of its own block for any scale >= 0.5.

The step-by-step pieces (``resize``, ``crop``, ``hflip``, ``RandomScale``, ``RandomCrops``,
``RandomHorizontalFlip``) live in ``transform_reference``: they are checked here on their own and are
the oracle that the fused ``TrainTransform`` is checked against, bit for bit.
"""

import pytest
import torch

from crowd_datasets.transforms import BilinearResize, TrainTransform
from transform_reference import RandomCrops, RandomHorizontalFlip, RandomScale, crop, hflip, resize

SPACING = 10
BLOCK_RADIUS = 3
CROP_SIZES = [96, 100, 128]
# (presence channel, id channel, ids reversed) for the degraded and the clean image.
IMAGE_MARK = (1, 0, False)
CLEAN_MARK = (0, 2, True)


def grid_points(height, width, seed):
    """float32 [N, 2] points, one per SPACING x SPACING cell, each far enough from its cell's
    border for a 7x7 block, with fractional parts in [0.1, 0.9] (never on a pixel edge)."""
    generator = torch.Generator().manual_seed(seed)
    cell_y, cell_x = torch.meshgrid(
        torch.arange(0, height - SPACING + 1, SPACING),
        torch.arange(0, width - SPACING + 1, SPACING),
        indexing="ij",
    )
    cells = torch.stack([cell_x.flatten(), cell_y.flatten()], dim=1)
    offsets = torch.randint(0, SPACING - 2 * BLOCK_RADIUS, cells.shape, generator=generator)
    fractions = 0.1 + 0.8 * torch.rand(cells.shape, generator=generator)
    return (cells + BLOCK_RADIUS + offsets).float() + fractions


def paint(points, height, width, radius, mark):
    """float32 [3, H, W] zeros with a (2 * radius + 1)^2 mark under each point."""
    presence_channel, id_channel, reverse = mark
    count = len(points)
    image = torch.zeros(3, height, width)
    for index, (x, y) in enumerate(points.floor().long().tolist()):
        code = count - 1 - index if reverse else index
        rows = slice(max(0, y - radius), y + radius + 1)
        cols = slice(max(0, x - radius), x + radius + 1)
        image[presence_channel, rows, cols] = 1.0
        image[id_channel, rows, cols] = (code + 1) / (count + 1)
    return image


def decode(values, count, mark):
    """Point ids from mark pixels; values is [3, M]. Fails where a pixel carries no clean mark."""
    presence_channel, id_channel, reverse = mark
    assert torch.all((values[presence_channel] - 1).abs() < 1e-4), "point is off its mark"
    scaled = values[id_channel] * (count + 1)
    assert torch.all((scaled - scaled.round()).abs() < 1e-2), "mark blended with background"
    codes = scaled.round().long() - 1
    return count - 1 - codes if reverse else codes


def ids_under(image, points, count, mark):
    """Ids of the marks under points [M, 2] in image [3, h, w]."""
    height, width = image.shape[-2:]
    cols = points[:, 0].floor().long()
    rows = points[:, 1].floor().long()
    assert torch.all((cols >= 0) & (cols < width) & (rows >= 0) & (rows < height))
    return decode(image[:, rows, cols], count, mark)


def visible_ids(image, count, mark):
    """Sorted ids of all single-pixel marks present in image [3, h, w]."""
    present = image[mark[0]] == 1.0
    return decode(image[:, present], count, mark).sort().values


def make_sample(height, width, seed, radius):
    points = grid_points(height, width, seed)
    image = paint(points, height, width, radius, IMAGE_MARK)
    clean = paint(points, height, width, radius, CLEAN_MARK)
    return image, points, clean


def check_rigid(moved, original):
    """moved[i] = original[i] shifted by one integer offset, x possibly mirrored (x -> a - x)."""
    dy = moved[:, 1] - original[:, 1]
    torch.testing.assert_close(dy, dy[:1].round().expand_as(dy), atol=1e-4, rtol=0)
    dx = moved[:, 0] - original[:, 0]
    sx = moved[:, 0] + original[:, 0]
    shifted = torch.allclose(dx, dx[:1].round().expand_as(dx), atol=1e-4, rtol=0)
    mirrored = torch.allclose(sx, sx[:1].round().expand_as(sx), atol=1e-4, rtol=0)
    assert shifted or mirrored


def check_crops(images, points_per_crop, cleans, original_points, crop_size, exact):
    """Every output point sits on its own mark in the crop and in the clean crop; with
    single-pixel marks (exact) also: no visible point dropped, and the crop is rigid."""
    count, num_crops = len(original_points), len(points_per_crop)
    assert images.shape == (num_crops, 3, crop_size, crop_size)
    assert cleans.shape == images.shape
    assert images.dtype == cleans.dtype == torch.float32
    for image, points, clean in zip(images, points_per_crop, cleans):
        assert points.dtype == torch.float32 and points.shape[1] == 2
        assert torch.all((points >= 0) & (points <= crop_size))
        ids = ids_under(image, points, count, IMAGE_MARK)
        assert torch.equal(ids, ids_under(clean, points, count, CLEAN_MARK))
        assert len(set(ids.tolist())) == len(ids)
        if exact:
            assert torch.equal(ids.sort().values, visible_ids(image, count, IMAGE_MARK))
            assert torch.equal(ids.sort().values, visible_ids(clean, count, CLEAN_MARK))
            if len(ids):
                check_rigid(points, original_points[ids])


# ---------------------------------------------------------------- scaling


@pytest.mark.parametrize("scale", [0.5, 0.7, 0.83, 1.0, 1.17, 1.3, 2.0])
def test_random_scale_moves_points_with_pixels(scale):
    image, points, clean = make_sample(120, 150, seed=1, radius=BLOCK_RADIUS)
    out_image, out_points, out_clean = RandomScale(32, scale, scale)(image, points, clean)
    height, width = round(120 * scale), round(150 * scale)
    assert out_image.shape == out_clean.shape == (3, height, width)
    assert out_image.dtype == out_points.dtype == out_clean.dtype == torch.float32
    expected = points * torch.tensor([width / 150, height / 120])
    torch.testing.assert_close(out_points, expected)
    everyone = torch.arange(len(points))
    assert torch.equal(ids_under(out_image, out_points, len(points), IMAGE_MARK), everyone)
    assert torch.equal(ids_under(out_clean, out_points, len(points), CLEAN_MARK), everyone)


@pytest.mark.parametrize("size", [(130, 300), (77, 91), (201, 113)])
def test_resize_uses_actual_ratio_per_axis(size):
    image, points, clean = make_sample(120, 150, seed=2, radius=BLOCK_RADIUS)
    height, width = size
    out_image, out_points, out_clean = resize(image, points, height, width, clean)
    torch.testing.assert_close(out_points, points * torch.tensor([width / 150, height / 120]))
    everyone = torch.arange(len(points))
    assert torch.equal(ids_under(out_image, out_points, len(points), IMAGE_MARK), everyone)
    assert torch.equal(ids_under(out_clean, out_points, len(points), CLEAN_MARK), everyone)


@pytest.mark.parametrize("size", [(130, 300), (77, 91), (240, 301)])
def test_resize_pixel_and_point_mappings_agree_subpixel(size):
    """On a ramp image (each pixel stores its own centre coordinate), every resized interior
    pixel tells where it was sampled from; moving that source point must land on the pixel's
    centre. Catches half-pixel offsets that the block marks cannot see."""
    height, width = 120, 150
    rows, cols = torch.meshgrid(
        torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij"
    )
    ramp = torch.stack([cols / width, rows / height, torch.zeros(height, width)])
    new_height, new_width = size
    sampled, _, _ = resize(ramp, torch.zeros(0, 2), new_height, new_width)
    source = torch.stack([sampled[0] * width, sampled[1] * height], dim=-1).reshape(-1, 2)
    _, moved, _ = resize(ramp, source, new_height, new_width)
    out_rows, out_cols = torch.meshgrid(
        torch.arange(new_height) + 0.5, torch.arange(new_width) + 0.5, indexing="ij"
    )
    centres = torch.stack([out_cols, out_rows], dim=-1).reshape(-1, 2)
    # Bilinear sampling clamps within half a pixel of the border; the ramp is not linear there.
    interior = (
        (source[:, 0] > 0.5)
        & (source[:, 0] < width - 0.5)
        & (source[:, 1] > 0.5)
        & (source[:, 1] < height - 0.5)
    )
    assert interior.float().mean() > 0.9
    torch.testing.assert_close(moved[interior], centres[interior], atol=1e-3, rtol=0)


def test_random_scale_skipped_when_crop_would_not_fit():
    image, points, clean = make_sample(100, 200, seed=3, radius=0)
    out_image, out_points, out_clean = RandomScale(128, 1.2, 1.2)(image, points, clean)
    assert out_image.shape == (3, 100, 200)
    assert torch.equal(out_image, image) and torch.equal(out_points, points)
    assert torch.equal(out_clean, clean)
    # 1.28 * 100 == 128: the crop just fits, so the scale applies.
    out_image, _, _ = RandomScale(128, 1.28, 1.28)(image, points, clean)
    assert out_image.shape == (3, 128, 256)


def test_random_scale_draws_within_range():
    image, points, _ = make_sample(100, 100, seed=4, radius=0)
    transform = RandomScale(10, 0.7, 1.3)
    generator = torch.Generator().manual_seed(0)
    sizes = {transform(image, points, generator=generator)[0].shape[-1] for _ in range(40)}
    assert min(sizes) >= 70 and max(sizes) <= 130
    assert len(sizes) > 10


# ---------------------------------------------------------------- crops


def test_crop_keeps_half_open_window_and_shifts():
    image = torch.zeros(3, 60, 60)
    points = torch.tensor(
        [[10.0, 20.0], [9.99, 20.0], [41.99, 51.99], [42.0, 30.0], [30.0, 52.0], [25.5, 19.5]]
    )
    _, kept, _ = crop(image, points, x0=10, y0=20, size=32)
    torch.testing.assert_close(kept, torch.tensor([[0.0, 0.0], [31.99, 31.99]]))


@pytest.mark.parametrize("crop_size", CROP_SIZES)
def test_random_crops_move_points_with_pixels(crop_size):
    image, points, clean = make_sample(170, 210, seed=5, radius=0)
    transform = RandomCrops(crop_size, num_crops=5)
    generator = torch.Generator().manual_seed(crop_size)
    for _ in range(8):
        images, points_per_crop, cleans = transform(image, points, clean, generator)
        assert len(points_per_crop) == 5
        check_crops(images, points_per_crop, cleans, points, crop_size, exact=True)


@pytest.mark.parametrize("size", [(50, 70), (50, 300), (300, 40), (128, 127)])
def test_small_images_are_padded(size):
    height, width = size
    image, points, clean = make_sample(height, width, seed=6, radius=0)
    images, points_per_crop, cleans = RandomCrops(128, num_crops=3)(image, points, clean)
    check_crops(images, points_per_crop, cleans, points, 128, exact=True)
    if height <= 128 and width <= 128:
        for crop_image, crop_points in zip(images, points_per_crop):
            assert torch.equal(crop_points, points)
            assert torch.equal(crop_image[:, :height, :width], image)
            assert crop_image[:, height:].abs().sum() == 0
            assert crop_image[:, :, width:].abs().sum() == 0


def test_crops_without_points_or_clean():
    image = torch.rand(3, 140, 150)
    images, points_per_crop, cleans = RandomCrops(96, num_crops=2)(image, torch.zeros(0, 2))
    assert images.shape == (2, 3, 96, 96) and cleans is None
    assert all(points.shape == (0, 2) for points in points_per_crop)


# ---------------------------------------------------------------- flips


@pytest.mark.parametrize("crop_size", CROP_SIZES)
def test_hflip_maps_x_to_crop_width_minus_x(crop_size):
    image = torch.zeros(3, crop_size, crop_size)
    points = torch.tensor([[0.5, 3.0], [10.25, 7.0], [crop_size - 0.5, 1.0]])
    _, flipped, _ = hflip(image, points)
    torch.testing.assert_close(flipped[:, 0], crop_size - points[:, 0])
    torch.testing.assert_close(flipped[:, 1], points[:, 1])


@pytest.mark.parametrize("crop_size", CROP_SIZES)
def test_random_flip_moves_points_with_pixels(crop_size):
    image, points, clean = make_sample(crop_size, crop_size, seed=7, radius=0)
    batch = (image[None].repeat(3, 1, 1, 1), [points] * 3, clean[None].repeat(3, 1, 1, 1))

    images, flipped, cleans = RandomHorizontalFlip(p=1.0)(*batch)
    check_crops(images, flipped, cleans, points, crop_size, exact=True)
    for crop_points in flipped:
        torch.testing.assert_close(crop_points[:, 0], crop_size - points[:, 0])
    assert torch.equal(images[0], image.flip(-1))

    images, kept, cleans = RandomHorizontalFlip(p=0.0)(*batch)
    assert torch.equal(images, batch[0]) and torch.equal(cleans, batch[2])
    assert all(torch.equal(crop_points, points) for crop_points in kept)


def test_random_flip_decides_per_crop():
    image, points, _ = make_sample(96, 96, seed=8, radius=0)
    images = image[None].repeat(64, 1, 1, 1)
    generator = torch.Generator().manual_seed(0)
    out, _, _ = RandomHorizontalFlip(p=0.5)(images, [points] * 64, None, generator)
    flipped = sum(torch.equal(crop_image, image.flip(-1)) for crop_image in out)
    kept = sum(torch.equal(crop_image, image) for crop_image in out)
    assert flipped + kept == 64
    assert 16 <= flipped <= 48


# ---------------------------------------------------------------- whole training transform


@pytest.mark.parametrize("crop_size", CROP_SIZES)
def test_train_transform_moves_points_with_pixels(crop_size):
    image, points, clean = make_sample(170, 210, seed=9, radius=BLOCK_RADIUS)
    transform = TrainTransform(crop_size, num_crops=4)
    for seed in range(12):
        generator = torch.Generator().manual_seed(seed)
        images, points_per_crop, cleans = transform(image, points, clean, generator)
        check_crops(images, points_per_crop, cleans, points, crop_size, exact=False)


@pytest.mark.parametrize("crop_size", CROP_SIZES)
def test_train_transform_crop_and_flip_exact(crop_size):
    image, points, clean = make_sample(150, 190, seed=10, radius=0)
    transform = TrainTransform(crop_size, num_crops=4, min_scale=1.0, max_scale=1.0)
    for seed in range(12):
        generator = torch.Generator().manual_seed(seed)
        images, points_per_crop, cleans = transform(image, points, clean, generator)
        check_crops(images, points_per_crop, cleans, points, crop_size, exact=True)


def test_train_transform_reproducible_with_generator():
    image, points, clean = make_sample(170, 210, seed=11, radius=0)
    transform = TrainTransform(96, num_crops=3)

    def run(seed, global_seed):
        torch.manual_seed(global_seed)
        return transform(image, points, clean, torch.Generator().manual_seed(seed))

    first, second = run(5, global_seed=0), run(5, global_seed=1)
    assert torch.equal(first[0], second[0]) and torch.equal(first[2], second[2])
    assert all(torch.equal(a, b) for a, b in zip(first[1], second[1]))
    others = [run(seed, global_seed=0)[0] for seed in range(6, 10)]
    assert any(not torch.equal(first[0], other) for other in others)


def test_train_transform_without_clean_or_generator():
    image, points, _ = make_sample(60, 80, seed=12, radius=0)
    images, points_per_crop, cleans = TrainTransform(128, num_crops=2)(image, points)
    assert images.shape == (2, 3, 128, 128) and images.dtype == torch.float32
    assert cleans is None and len(points_per_crop) == 2
    assert all(crop_points.dtype == torch.float32 for crop_points in points_per_crop)


def test_bad_shapes_raise():
    image = torch.zeros(3, 40, 40)
    transform = TrainTransform(32)
    with pytest.raises(ValueError, match="points"):
        transform(image, torch.zeros(5, 3))
    with pytest.raises(ValueError, match="clean"):
        transform(image, torch.zeros(5, 2), torch.zeros(3, 40, 41))
    with pytest.raises(ValueError, match="image"):
        transform(torch.zeros(40, 40), torch.zeros(5, 2))


@pytest.mark.parametrize("size", [(150, 210), (97, 131), (60, 300)])
def test_train_transform_equals_scale_crops_flip_in_turn_bit_for_bit(size):
    """The fused transform computes rescaled pixels only inside the crops; they must be the very same as
    the reference pieces applied in turn with the same generator."""
    height, width = size
    image = torch.rand(3, height, width, generator=torch.Generator().manual_seed(1))
    clean = torch.rand(3, height, width, generator=torch.Generator().manual_seed(2))
    points = torch.rand(40, 2, generator=torch.Generator().manual_seed(3)) * torch.tensor([width, height])
    transform = TrainTransform(64, num_crops=4, min_scale=0.7, max_scale=1.3, flip_prob=0.5)
    scale, crops, flip = RandomScale(64, 0.7, 1.3), RandomCrops(64, 4), RandomHorizontalFlip(0.5)
    for seed in range(12):
        fast = transform(image, points, clean, torch.Generator().manual_seed(seed))
        generator = torch.Generator().manual_seed(seed)
        slow = flip(*crops(*scale(image, points, clean, generator), generator), generator)
        assert torch.equal(fast[0], slow[0]) and torch.equal(fast[2], slow[2])
        assert all(torch.equal(a, b) for a, b in zip(fast[1], slow[1]))


def test_resizing_does_not_depend_on_the_number_of_threads():
    image = torch.rand(2, 3, 97, 131, generator=torch.Generator().manual_seed(0))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = BilinearResize((97, 131), (150, 200))(image)
        torch.set_num_threads(max(2, threads))
        many = BilinearResize((97, 131), (150, 200))(image)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)
    reference = torch.nn.functional.interpolate(image, size=(150, 200), mode="bilinear", align_corners=False)
    assert (one - reference).abs().max() < 1e-4
    assert torch.equal(BilinearResize((97, 131), (150, 200))(image, 10, 20, 64, 64), one[..., 10:74, 20:84])
    # Windows read only their own source columns: at the clamped right and bottom edges too, and shrinking.
    assert torch.equal(BilinearResize((97, 131), (150, 200))(image, 86, 136, 64, 64), one[..., 86:, 136:])
    shrink = BilinearResize((97, 131), (60, 75))
    assert torch.equal(shrink(image, 3, 41, 50, 34), shrink(image)[..., 3:53, 41:])


@pytest.mark.parametrize("size", [(100, 90), (300, 400)])  # too small to rescale (padded), and rescaled
def test_train_transform_reads_uint8_pixels_as_the_float_image_bit_for_bit(size):
    # The dataset hands decoded uint8 pixels to the transform, which converts only what its crops read.
    generator = torch.Generator().manual_seed(4)
    pixels, clean = (torch.randint(0, 256, (3, *size), dtype=torch.uint8, generator=generator) for _ in range(2))
    points = torch.rand(20, 2, generator=generator) * torch.tensor([size[1], size[0]])
    transform = TrainTransform(128, num_crops=3)
    from_pixels = transform(pixels, points, clean, torch.Generator().manual_seed(1))
    from_floats = transform(pixels.float() / 255, points, clean.float() / 255, torch.Generator().manual_seed(1))
    assert from_pixels[0].dtype == from_pixels[2].dtype == torch.float32
    assert torch.equal(from_pixels[0], from_floats[0]) and torch.equal(from_pixels[2], from_floats[2])
    assert all(torch.equal(a, b) for a, b in zip(from_pixels[1], from_floats[1]))
    assert not torch.equal(from_pixels[0], from_pixels[2])  # the clean crops are the clean image's
