"""The network as an ONNX file: ``export_onnx`` writes one, ``OnnxNetwork`` runs one with onnxruntime.

The exported graph is the inference network in fp32: BatchNorm folded into the convolutions, then the
input normalisation, backbone, FPN, both heads and the anchor points, all inside the graph. Its input
``images`` is ``[1, 3, H, W]`` float pixels in [0, 1] with ``H`` and ``W`` any multiples of 128 (the
padding ``Counter`` applies); its outputs ``pred_logits`` and ``pred_points`` ``[1, A, 2]`` are the
``PointCounter``'s. The model settings travel in the file's metadata, so that ``Counter`` pads, tiles
and selects points for an ``.onnx`` file exactly as for a ``.pth``. The restoration module is train-only
and is not exported.

Exporter: PyTorch's torch.export-based one (``dynamo=True``). The TorchScript exporter is deprecated
since PyTorch 2.9; this one records height and width as symbols (constrained to multiples of 128), so the
anchor grid is computed from the input's shape inside the graph rather than baked in for the example
size. Opset 18 is what it emits by default; onnxruntime runs it from version 1.14 on.

``onnx`` and ``onnxruntime`` are imported only here, and only when a function needs them.
"""
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.checkpoint import CheckpointError
from models.network import ModelSettings, PointCounter, normalisation

from .backend import NetworkBackend
from .tiling import PAD_MULTIPLE
from .torch_network import fuse_batchnorm

ONNX_SUFFIX = ".onnx"
OPSET = 18
INPUT_NAME = "images"
OUTPUT_NAMES = ("pred_logits", "pred_points")
SETTINGS_KEY = "dehaze_p2pnet.model_settings"
# The heights and widths the graph accepts: multiples of PAD_MULTIPLE up to 512 of them (65536 px).
MAX_BLOCKS = 512


def is_onnx_file(path) -> bool:
    """Whether ``path`` names an ONNX file (by its suffix), rather than a PyTorch checkpoint."""
    return Path(path).suffix.lower() == ONNX_SUFFIX


def import_module(name: str):
    """``onnx`` or ``onnxruntime``, or ``ImportError`` saying how to install it."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise ImportError(f"{name} is needed for .onnx files and is not installed: "
                          "pip install -r requirements.txt") from error


class ExportedNetwork(nn.Module):
    """What the ONNX graph computes: ``images [1, 3, H, W]`` in [0, 1] -> ``(pred_logits [1, A, 2],
    pred_points [1, A, 2])``, with ``model``'s BatchNorm folded and without its restoration module."""

    def __init__(self, model: PointCounter):
        super().__init__()
        self.network = fuse_batchnorm(model)
        self.network.restoration = None

    def forward(self, images: torch.Tensor) -> tuple:
        outputs = self.network(images)
        return outputs["pred_logits"], outputs["pred_points"]


def export_onnx(model: PointCounter, path, example_size: tuple = (256, 384)) -> Path:
    """Write ``model`` (on the CPU) to the ONNX file ``path``, check it with ``onnx.checker`` and
    return ``path``. The file appears complete or not at all (written beside it, then renamed)."""
    onnx = import_module("onnx")
    path = Path(path)
    network = ExportedNetwork(model.cpu()).eval()
    height, width = (torch.export.Dim(name, min=1, max=MAX_BLOCKS) for name in ("height_blocks", "width_blocks"))
    example = torch.rand(1, 3, *example_size)
    program = torch.onnx.export(network, (example,), dynamo=True, external_data=False, opset_version=OPSET,
                                input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES), verbose=False,
                                dynamic_shapes={"images": {2: PAD_MULTIPLE * height, 3: PAD_MULTIPLE * width}})
    proto = program.model_proto
    settings = ModelSettings(**{**model.settings.to_dict(), "restoration": False})
    entry = proto.metadata_props.add()
    entry.key, entry.value = SETTINGS_KEY, json.dumps(settings.to_dict())
    proto.producer_name = "dehaze-p2pnet"
    onnx.checker.check_model(proto, full_check=True)
    partial = path.with_name(path.name + ".tmp")
    try:
        onnx.save(proto, str(partial))
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


class OnnxNetwork(NetworkBackend):
    """The ONNX backend (``inference.backend.NetworkBackend``): an exported ``.onnx`` file run by
    onnxruntime, in fp32, without the restoration module; its outputs are CPU tensors.

    On a CUDA ``device`` it uses onnxruntime's CUDA provider when the installed onnxruntime has one,
    and says so when it runs on the CPU instead.
    """

    amp = False
    has_restoration = False

    def __init__(self, path, device="cpu", log=print):
        onnxruntime = import_module("onnxruntime")
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file (expected an .onnx file from tools/export_onnx.py)")
        providers = ["CPUExecutionProvider"]
        if torch.device(device).type == "cuda":
            if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
                providers.insert(0, ("CUDAExecutionProvider", {"device_id": torch.device(device).index or 0}))
            else:
                log(f"{path.name}: this onnxruntime has no CUDA provider (pip install onnxruntime-gpu); "
                    "running on the CPU")
        options = onnxruntime.SessionOptions()
        # As many threads as PyTorch uses: under torchrun that is one per process, not every core each.
        options.intra_op_num_threads = torch.get_num_threads()
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=providers)
        except Exception as error:  # onnxruntime raises its own exception types for unreadable files
            raise CheckpointError(f"{path}: onnxruntime cannot load it ({str(error).splitlines()[0]})") from None
        metadata = self.session.get_modelmeta().custom_metadata_map
        if SETTINGS_KEY not in metadata:
            raise CheckpointError(f"{path}: an ONNX file without this project's model settings in its metadata; "
                                  "export it with tools/export_onnx.py")
        self.model_settings = ModelSettings.from_dict(json.loads(metadata[SETTINGS_KEY]))
        inputs = [entry.name for entry in self.session.get_inputs()]
        outputs = [entry.name for entry in self.session.get_outputs()]
        if inputs != [INPUT_NAME] or tuple(outputs) != OUTPUT_NAMES:
            raise CheckpointError(f"{path}: expected input {INPUT_NAME!r} and outputs {list(OUTPUT_NAMES)}, "
                                  f"found {inputs} and {outputs}")
        self.path = path
        self.dtype = torch.float32
        self.fill = torch.tensor(normalisation(self.settings.input_norm)[0])

    @property
    def settings(self) -> ModelSettings:
        return self.model_settings

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def padding_fill(self) -> torch.Tensor:
        return self.fill

    def __call__(self, images: torch.Tensor, restore: bool = False) -> dict:
        pixels = np.ascontiguousarray(images.detach().cpu().numpy(), dtype=np.float32)
        logits, points = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: pixels})
        return {"pred_logits": torch.from_numpy(logits), "pred_points": torch.from_numpy(points)}
