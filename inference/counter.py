"""``Counter``: the one prediction path. Decoding, padding, the network (exact or fast mode), tiling and
point selection happen here for ``run_test.py`` (own pictures and datasets), ``engine.evaluate`` and
Python users alike."""
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from crowd_datasets.image_io import check_rgb, read_rgb, to_tensor
from models.checkpoint import build_from_checkpoint
from models.network import FEATURE_STRIDE, PointCounter
from util.distributed import resolve_device

from .backend import NetworkBackend
from .job import CountingOptions, CountResult
from .onnx_network import OnnxNetwork, is_onnx_file
from .tiling import check_tile_size, core_slices, padded_size, plan_tiles
from .torch_network import TorchNetwork
from .zones import count_points

# Image files declaring more pixels are refused before decoding (an 8000 x 6000 photo is 48 MP).
DEFAULT_MAX_PIXELS = 50_000_000
# Cores of at most 2048 px per side: a 4000 x 3000 photo runs as 2 x 2 tiles, which bounds its memory
# at little extra work (figures: docs/performance.md, "Why the code is as it is").
DEFAULT_TILE_SIZE = 2048


class Counter:
    """A network with its pre- and post-processing; ``counter(image)`` counts the people in one image.

    ``model`` is a ``PointCounter`` (run as a ``TorchNetwork`` on ``device``, in fast mode with ``amp``)
    or a ready ``NetworkBackend`` such as an ``OnnxNetwork`` (an exported file run by onnxruntime,
    which chose its device when loaded).

    ``image`` is a file path, an ``H x W x 3`` uint8 RGB array, or a float ``[3, H, W]`` tensor with
    pixels in [0, 1]. Images are padded at the bottom and right to multiples of ``PAD_MULTIPLE`` (128),
    as upstream evaluates. Images larger than ``tile_size`` (pixels per side; 0: never) run as
    overlapping tiles whose result equals the whole image's (``inference.tiling``). ``amp`` selects
    fast mode (``inference.torch_network``). Image files whose header declares more than ``max_pixels``
    pixels are refused before decoding (``ImageReadError``).
    """

    def __init__(self, model, device="cpu", threshold: float = 0.5, amp: bool = False,
                 max_pixels: int = DEFAULT_MAX_PIXELS, tile_size: int = DEFAULT_TILE_SIZE):
        if isinstance(model, PointCounter):
            self.network = TorchNetwork(model, resolve_device(device), amp)
        elif isinstance(model, NetworkBackend):
            if amp and not model.amp:
                raise ValueError("fast mode (--amp) is for PyTorch checkpoints; "
                                 + (f"{model.path.name} runs in fp32 with onnxruntime" if isinstance(
                                     model, OnnxNetwork) else f"this {type(model).__name__} runs in fp32"))
            self.network = model
        else:
            raise TypeError(f"expected a PointCounter or a NetworkBackend, got {type(model).__name__}")
        self.device = self.network.device
        self.threshold = threshold
        self.max_pixels = max_pixels
        self.tile_size = check_tile_size(tile_size)

    @classmethod
    def from_checkpoint(cls, path, device="auto", threshold: float = 0.5, input_norm: str = None, amp: bool = False,
                        log=None, max_pixels: int = DEFAULT_MAX_PIXELS, tile_size: int = DEFAULT_TILE_SIZE):
        """Load a checkpoint written by this project or in the upstream layout (strictly), or an
        ``.onnx`` file from ``tools/export_onnx.py`` (run by onnxruntime, in fp32).

        ``input_norm`` overrides the stored setting; original P2PNet checkpoints need ``"imagenet"``.
        An ONNX file has its normalisation in the graph: ``input_norm`` may only repeat it.
        """
        if is_onnx_file(path):
            network = OnnxNetwork(path, resolve_device(device), log=log or print)
            if input_norm not in (None, network.settings.input_norm):
                raise ValueError(f"--input_norm {input_norm}: {path} normalises its input with "
                                 f"{network.settings.input_norm!r} inside the graph; drop the flag")
            return cls(network, threshold=threshold, amp=amp, max_pixels=max_pixels, tile_size=tile_size)
        model, _, _ = build_from_checkpoint(path, input_norm=input_norm, log=log)
        return cls(model, device=device, threshold=threshold, amp=amp, max_pixels=max_pixels, tile_size=tile_size)

    @property
    def settings(self):
        return self.network.settings

    @property
    def has_restoration(self) -> bool:
        return self.network.has_restoration

    def read(self, image):
        """A path -> its decoded ``H x W x 3`` uint8 RGB array; arrays and ``[3, H, W]`` float tensors
        are checked and returned as they are (converted per tile, so a large image is never held in
        float32 whole)."""
        if isinstance(image, (str, Path)):
            return read_rgb(image, self.max_pixels)
        if isinstance(image, torch.Tensor):
            if image.dim() != 3 or image.shape[0] != 3 or not image.is_floating_point() or 0 in image.shape:
                raise ValueError(f"expected a float [3, H, W] image tensor, got {image.dtype} {tuple(image.shape)}")
            return image
        if not isinstance(image, np.ndarray):
            raise TypeError(f"expected an image path, an H x W x 3 uint8 RGB array or a [3, H, W] float tensor, "
                            f"got {type(image).__name__}")
        return check_rgb(image)

    def window(self, image, box: tuple) -> torch.Tensor:
        """``[1, 3, h, w]`` float pixels of ``box`` ``(top, bottom, left, right)`` of the padded image,
        on the network's device; outside ``image`` the padding value."""
        top, bottom, left, right = box
        if isinstance(image, np.ndarray):
            height, width = image.shape[:2]
            inside = to_tensor(image[top:min(bottom, height), left:min(right, width)])
        else:
            height, width = image.shape[-2:]
            inside = image[:, top:min(bottom, height), left:min(right, width)]
        inside = inside.to(self.device, non_blocking=True).unsqueeze(0)
        if inside.shape[-2:] == (bottom - top, right - left):
            return inside
        fill = self.network.padding_fill.to(inside.dtype).view(1, 3, 1, 1)
        padded = fill.expand(1, 3, bottom - top, right - left).clone()
        padded[:, :, :inside.shape[-2], :inside.shape[-1]] = inside
        return padded

    @torch.inference_mode()
    def outputs(self, image, restore: bool = False) -> dict:
        """The network's raw outputs for the whole (padded) image, tiled or not: ``pred_logits [A, 2]``
        and ``pred_points [A, 2]`` (``(x, y)`` pixels of the image; anchors in the whole image's
        order, ``A = H' / 8 * W' / 8 * row * line`` for the padded size ``H' x W'``) and with ``restore``
        ``pred_restored [3, H, W]`` in [0, 1]; float32 on the network's device."""
        if restore and not self.has_restoration:
            raise ValueError("this network has no restoration module, so it cannot restore images: that needs a .pth "
                             "checkpoint trained with it (an .onnx export never carries it)")
        image = self.read(image)
        height, width = image.shape[:2] if isinstance(image, np.ndarray) else image.shape[-2:]
        padded_height, padded_width = padded_size(height, width)
        tiles = plan_tiles(padded_height, padded_width, self.tile_size)
        anchors = self.settings.row * self.settings.line
        logits = points = restored = None
        for tile in tiles:
            top, bottom, left, right = tile.window
            result = self.network(self.window(image, tile.window), restore=restore)
            if len(tiles) == 1:
                logits, points = result["pred_logits"][0], result["pred_points"][0]
                if restore:
                    restored = result["pred_restored"][0, :, :height, :width]
                break
            if logits is None:
                cells = (padded_height // FEATURE_STRIDE, padded_width // FEATURE_STRIDE, anchors, 2)
                logits, points = (torch.empty(cells, device=self.device) for _ in range(2))
                restored = torch.empty((3, height, width), device=self.device) if restore else None
            shape = ((bottom - top) // FEATURE_STRIDE, (right - left) // FEATURE_STRIDE, anchors, 2)
            in_window, in_whole = core_slices(tile, FEATURE_STRIDE)
            logits[in_whole] = result["pred_logits"][0].view(shape)[in_window]
            origin = torch.tensor([left, top], dtype=points.dtype, device=points.device)
            points[in_whole] = result["pred_points"][0].view(shape)[in_window] + origin
            if restore:
                in_window, in_whole = core_slices(tile, 1, height, width)
                restored[(slice(None), *in_whole)] = result["pred_restored"][(0, slice(None), *in_window)]
        result = {"pred_logits": logits.reshape(-1, 2), "pred_points": points.reshape(-1, 2)}
        if restore:
            result["pred_restored"] = restored
        return result

    def select(self, outputs: dict, threshold: float = None):
        """Anchors whose softmax person score exceeds ``threshold`` (default: the counter's): ``(points [N, 2],
        scores [N])`` float32 CPU tensors, ``(x, y)`` pixels of the image, not clipped to it (as upstream)."""
        scores = F.softmax(outputs["pred_logits"].float(), dim=-1)[:, 1]
        keep = scores > (self.threshold if threshold is None else threshold)
        return outputs["pred_points"][keep].float().cpu(), scores[keep].cpu()

    def predict(self, image, options: CountingOptions = None) -> CountResult:
        """The people in ``image``: a ``CountResult`` of the anchors scoring above ``options.threshold``
        (default: the counter's), outside every polygon of ``options.exclusions``, with each zone's count
        of ``options.zones``; with ``options.restore`` also the restoration module's view of the scene
        (needs a checkpoint that carries the module). ``options`` defaults to ``CountingOptions()``."""
        options = options or CountingOptions()
        image = self.read(image)
        height, width = image.shape[:2] if isinstance(image, np.ndarray) else image.shape[-2:]
        outputs = self.outputs(image, restore=options.restore)
        points, scores = (tensor.numpy() for tensor in self.select(outputs, options.threshold))
        points, scores, zones = count_points(points, scores, options.zones, options.exclusions)
        restored = None
        if options.restore:
            restored = outputs["pred_restored"].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
        return CountResult(points=points, scores=scores, zones=zones, height=int(height), width=int(width),
                           restored=restored)

    def __call__(self, image) -> CountResult:
        return self.predict(image)
