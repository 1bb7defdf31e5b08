"""Anchor points of the P2PNet head: a fixed grid of reference points on the stride-8 feature map."""
import torch


def anchor_points(grid_height: int, grid_width: int, stride: int = 8, row: int = 2, line: int = 2,
                  device=None) -> torch.Tensor:
    """Reference points for a ``grid_height x grid_width`` feature map, as float32 ``[A, 2]`` ``(x, y)`` pixels.

    ``A = grid_height * grid_width * row * line``. Cell ``(i, j)`` is centred at ``((j + 0.5) * stride,
    (i + 0.5) * stride)``; inside it the anchors sit at offsets ``((1..line) - 0.5) * stride / line - stride / 2``
    in x and ``((1..row) - 0.5) * stride / row - stride / 2`` in y. Order: cells row-major (y, then x), then
    anchors within a cell y-major, x-minor, which is the order the heads emit their outputs in.
    Computed in float64 and rounded once, so the values are bit-identical to the upstream numpy code.
    """
    options = dict(dtype=torch.float64, device=device)
    offset_x = (torch.arange(1, line + 1, **options) - 0.5) * (stride / line) - stride / 2
    offset_y = (torch.arange(1, row + 1, **options) - 0.5) * (stride / row) - stride / 2
    centre_x = (torch.arange(grid_width, **options) + 0.5) * stride
    centre_y = (torch.arange(grid_height, **options) + 0.5) * stride
    cell_y, cell_x = torch.meshgrid(centre_y, centre_x, indexing="ij")
    off_y, off_x = torch.meshgrid(offset_y, offset_x, indexing="ij")
    cells = torch.stack((cell_x.reshape(-1), cell_y.reshape(-1)), dim=1)
    offsets = torch.stack((off_x.reshape(-1), off_y.reshape(-1)), dim=1)
    points = cells[:, None, :] + offsets[None, :, :]
    return points.reshape(-1, 2).to(torch.float32)
