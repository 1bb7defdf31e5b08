"""``NetworkBackend``: what ``Counter`` runs. Both backends declare it as a base class, the PyTorch one
(``inference.torch_network.TorchNetwork``) and the ONNX one (``inference.onnx_network.OnnxNetwork``),
so that a backend missing part of it cannot be built (``TypeError``)."""
from abc import abstractmethod
from typing import Protocol, runtime_checkable

import torch

from models.network import ModelSettings


@runtime_checkable
class NetworkBackend(Protocol):
    """A network that counts, without pre- or post-processing.

    ``backend(images [1, 3, H, W] float pixels in [0, 1], H and W multiples of ``PAD_MULTIPLE``,
    restore=False)`` returns float32 tensors on ``device``: ``pred_logits [1, A, 2]`` (index 1 = person),
    ``pred_points [1, A, 2]`` ``(x, y)`` pixels of ``images``, and with ``restore`` (only where
    ``has_restoration``) ``pred_restored [1, 3, H, W]`` in [0, 1].
    """

    @property
    @abstractmethod
    def settings(self) -> ModelSettings:
        """The network's settings (anchors per cell, input normalisation, restoration)."""

    @property
    @abstractmethod
    def device(self) -> torch.device:
        """Where ``images`` go and the outputs come back."""

    @property
    @abstractmethod
    def amp(self) -> bool:
        """Whether it computes in reduced precision (fast mode)."""

    @property
    @abstractmethod
    def padding_fill(self) -> torch.Tensor:
        """``[3]``: the pixel value that normalises to zero, to pad images with (as upstream pads with zeros
        after normalising)."""

    @property
    @abstractmethod
    def has_restoration(self) -> bool:
        """Whether ``restore=True`` can give the restoration module's output."""

    @abstractmethod
    def __call__(self, images: torch.Tensor, restore: bool = False) -> dict:
        """The outputs of ``images``, as the class docstring says."""
