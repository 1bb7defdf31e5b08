"""Counting people with a trained network: ``Counter``, the one prediction path (reading, padding,
tiling, point selection), what it is asked (``CountingOptions``) and what it gives (``CountResult``), and
the backends it runs the network with (``NetworkBackend``): PyTorch (``TorchNetwork``, exact or fast
mode) and ONNX (``OnnxNetwork``, with ``export_onnx``)."""
from .backend import NetworkBackend
from .counter import DEFAULT_MAX_PIXELS, DEFAULT_TILE_SIZE, Counter
from .job import CountingOptions, CountResult
from .onnx_network import OnnxNetwork, export_onnx, is_onnx_file
from .tiling import PAD_MULTIPLE, check_tile_size
from .torch_network import TorchNetwork

__all__ = ["Counter", "CountingOptions", "CountResult", "DEFAULT_MAX_PIXELS", "DEFAULT_TILE_SIZE", "NetworkBackend",
           "OnnxNetwork", "PAD_MULTIPLE", "TorchNetwork", "check_tile_size", "export_onnx", "is_onnx_file"]
