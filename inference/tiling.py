"""Tiling: a large image runs as overlapping windows whose outputs are exactly the whole image's.

The padded image (a multiple of 128 per side, as upstream evaluates) is split into *cores* that
partition it, aligned to the 128 grid. Each core's window adds ``TILE_MARGIN`` pixels on every side
that is inside the image, so the network sees everything that the anchors of the core depend on;
each anchor is then taken from exactly one window, the one whose core holds its stride-8 cell. Counts
add up, no point is doubled or dropped at a seam, and logits and points equal the whole image's to
float rounding.

Receptive field of the stride-8 features the heads read, worked out layer by layer (size ``r`` and
jump ``j`` in input pixels; a 3x3 conv adds ``2j``, a 2x2 max-pool adds ``j`` and doubles ``j``):
VGG16 conv1_x r=5, pool 6 (j=2), conv2_x 14, pool 16 (j=4), conv3_x 40, pool 44 (j=8), conv4_x 92
(stage 3); pool 100 (j=16), conv5_x 196 (stage 4). The FPN upsamples stage 4 by 2 (nearest), so a
stride-8 cell reads a stride-16 cell whose centre is 4 px off its own: 196 + 8. Then FPN's 3x3 P4_2
and each head's three 3x3 convs add 16 px each: 204 + 64 = 268 px, 134 px either side of a cell's
centre, so 130 px beyond the edge of a core's outermost cells. The margin is the next multiple of 16
(windows stay on the stride-16 grid, so every pooling and the upsampling line up with the whole
image's): 144. The restoration module reads stages 1-3 only (92 px) through a few convolutions of its
own; a test checks that its output, too, equals the whole image's.
"""
from dataclasses import dataclass

TILE_MARGIN = 144
# Images are padded at the bottom and right to multiples of this, as upstream evaluates them; tiles lie on
# the same grid.
PAD_MULTIPLE = 128


@dataclass(frozen=True)
class Tile:
    """One window of a tiled image, in pixels of the padded image, each ``(top, bottom, left, right)``
    with exclusive ends: ``core`` is the part whose anchors this window decides, ``window`` the core
    plus the margin that the network sees."""

    core: tuple
    window: tuple


def check_tile_size(tile_size: int, align: int = PAD_MULTIPLE) -> int:
    """``tile_size`` itself, or ``ValueError`` unless it is 0 (never tile) or a positive multiple of
    ``align`` pixels."""
    if not isinstance(tile_size, int) or tile_size < 0 or tile_size % align:
        raise ValueError(f"tile_size must be 0 (never tile) or a positive multiple of {align} pixels, "
                         f"got {tile_size}")
    return tile_size


def padded_size(height: int, width: int) -> tuple:
    """``(height, width)`` rounded up to multiples of ``PAD_MULTIPLE``."""
    return tuple(-(-side // PAD_MULTIPLE) * PAD_MULTIPLE for side in (height, width))


def core_edges(length: int, tile_size: int, align: int = PAD_MULTIPLE) -> list:
    """Edges ``[0, …, length]`` of as few cores as hold ``length`` pixels with cores of at most
    ``tile_size`` pixels, on the ``align`` grid and as equal as it allows (so that no sliver of a core
    pays for a whole margin)."""
    count = -(-length // tile_size)
    blocks = length // align
    return [align * (blocks * index // count) for index in range(count)] + [length]


def plan_tiles(height: int, width: int, tile_size: int, margin: int = TILE_MARGIN, align: int = PAD_MULTIPLE) -> list:
    """The ``Tile`` list of a padded ``height`` x ``width`` image (multiples of ``align``), row by row:
    one tile with no margin when ``tile_size`` is 0 or the image fits in one core, else cores of at
    most ``tile_size`` (a multiple of ``align``) per side, each widened by ``margin`` inside the image."""
    if height % align or width % align:
        raise ValueError(f"padded image sides must be multiples of {align}, got {height} x {width}")
    check_tile_size(tile_size, align)
    if tile_size == 0 or (height <= tile_size and width <= tile_size):
        return [Tile(core=(0, height, 0, width), window=(0, height, 0, width))]
    rows, columns = core_edges(height, tile_size, align), core_edges(width, tile_size, align)
    tiles = []
    for top, bottom in zip(rows, rows[1:]):
        for left, right in zip(columns, columns[1:]):
            window = (max(top - margin, 0), min(bottom + margin, height),
                      max(left - margin, 0), min(right + margin, width))
            tiles.append(Tile(core=(top, bottom, left, right), window=window))
    return tiles


def core_slices(tile: Tile, stride: int, height: int = None, width: int = None) -> tuple:
    """Where ``tile``'s core lies in a map of stride ``stride`` (input pixels per cell): ``(in_window,
    in_whole)``, each a ``(rows, columns)`` pair of slices, into the map of the tile's window and into
    the map of the whole image; cut at ``height`` x ``width`` cells of the whole map where given (the
    unpadded image). Every stitched map takes each cell from the one tile whose core holds it."""
    top, _, left, _ = tile.window
    core_top, core_bottom, core_left, core_right = (edge // stride for edge in tile.core)
    if height is not None:
        core_bottom, core_right = min(core_bottom, height), min(core_right, width)
    core_bottom, core_right = max(core_bottom, core_top), max(core_right, core_left)
    top, left = top // stride, left // stride
    return ((slice(core_top - top, core_bottom - top), slice(core_left - left, core_right - left)),
            (slice(core_top, core_bottom), slice(core_left, core_right)))
