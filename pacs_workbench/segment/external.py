"""Bring your own model: a TorchScript or ONNX network with a YAML beside it saying what it expects.

``model.pt`` (TorchScript) or ``model.onnx`` needs ``model.yaml`` next to it::

    spacing_mm: [1.0, 1.0, 1.0]   # the voxel size it was trained at (x, y, z)
    intensity: [-1000, 400]       # HU window clipped and scaled to [0, 1] (the workbench's convention)
    in_channels: 1                # the workbench feeds one channel (CT)
    roi_size: 32                  # sliding-window patch edge in voxels
    output: softmax               # softmax (class 1 = lesion) or sigmoid (one channel)

The input is ``(batch, 1, z, y, x)`` float32, the output the logits in the same layout. A model
whose channels or spacing do not fit the cases is refused with the reason. MONAI bundles are not
read here: export the bundle's network to TorchScript (``monai.bundle ckpt_export``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pacs_workbench.core.files import sha256_file
from pacs_workbench.segment.data import HU_WINDOW, SegmentationError


class ExternalModel:
    """A loaded TorchScript/ONNX model, callable on a ``(B, 1, z, y, x)`` tensor like a torch module."""

    def __init__(self, path: Path, settings: dict[str, Any]) -> None:
        self.path = path
        self.sha256 = sha256_file(path)
        self.roi_size = int(settings.get("roi_size", 32))
        self.window = tuple(float(v) for v in settings.get("intensity", HU_WINDOW))
        self.sigmoid = str(settings.get("output", "softmax")) == "sigmoid"
        if path.suffix == ".onnx":
            import onnxruntime as ort

            self._session: Any = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            self._module: Any = None
        else:
            import torch

            self._module = torch.jit.load(str(path), map_location="cpu").eval()
            self._session = None

    def __call__(self, x: Any) -> Any:
        import torch

        if self._module is not None:
            out = self._module(x)
        else:
            name = self._session.get_inputs()[0].name
            out = torch.as_tensor(self._session.run(None, {name: x.cpu().numpy().astype(np.float32)})[0])
        if out.ndim != 5:
            raise SegmentationError(f"model output has {out.ndim} dimensions, expected 5 (B, C, z, y, x)")
        if self.sigmoid and out.shape[1] == 1:
            # Two logits whose softmax is the sigmoid: callers treat every model alike.
            return torch.cat([torch.zeros_like(out), out], dim=1)
        return out


def _settings(path: Path) -> dict[str, Any]:
    sidecar = path.with_suffix(".yaml")
    if not sidecar.is_file():
        raise SegmentationError(f"model {path.name} needs {sidecar.name} beside it (spacing_mm, intensity, ...)")
    settings = yaml.safe_load(sidecar.read_text(encoding="utf-8")) or {}
    if not isinstance(settings, dict):
        raise SegmentationError(f"{sidecar.name} must be a mapping")
    return settings


def load_external_model(
    path: str | os.PathLike[str], case_spacings: Sequence[tuple[float, float, float]], *, tolerance: float = 0.05
) -> ExternalModel:
    """Load a TorchScript or ONNX model and check it fits the cases (channels, spacing).

    Raises
    ------
    SegmentationError
        When the file or its YAML is missing, the model wants other than one input channel, its
        spacing differs from the cases' by more than ``tolerance`` mm, or a trial run fails.
    """
    import torch

    model_path = Path(path)
    if not model_path.is_file():
        raise SegmentationError(f"model {model_path.name} not found")
    settings = _settings(model_path)
    channels = int(settings.get("in_channels", 1))
    if channels != 1:
        raise SegmentationError(
            f"model {model_path.name} expects {channels} input channels; the cases give 1 (one CT volume)"
        )
    spacing = [float(v) for v in settings.get("spacing_mm", [])]
    for case in case_spacings:
        if spacing and np.max(np.abs(np.asarray(case) - np.asarray(spacing))) > tolerance:
            raise SegmentationError(
                f"model {model_path.name} was trained at {spacing} mm but the cases are at {list(case)} mm: "
                "rerun 03_preprocessing with target_spacing_mm set to the model's spacing"
            )
    model = ExternalModel(model_path, settings)
    trial = torch.zeros((1, 1, model.roi_size, model.roi_size, model.roi_size))
    try:
        with torch.no_grad():
            out = model(trial)
    except SegmentationError:
        raise
    except Exception as exc:
        raise SegmentationError(
            f"model {model_path.name} does not run on a (1, 1, {model.roi_size}, {model.roi_size}, "
            f"{model.roi_size}) input: {str(exc).splitlines()[0][:200]}"
        ) from exc
    if tuple(out.shape[2:]) != tuple(trial.shape[2:]):
        raise SegmentationError(f"model {model_path.name} output size {tuple(out.shape)} differs from its input")
    return model
