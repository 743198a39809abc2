"""The lesion network: a small MONAI 3-D U-Net trained on lesion-centred crops, cached by content hash.

Training draws ``patch`` ^3 crops from the labelled cases' preprocessed volumes (which
``03_preprocessing`` already centred on the lesion), augments them (flips on every axis, small
rotations, intensity scaling and shifts) and minimizes Dice + cross-entropy (``monai.losses.DiceCELoss``).
It is deterministic for a seed: ``torch.manual_seed``, ``monai.utils.set_determinism`` and a fixed
number of threads. The checkpoint is stored under the SHA-256 of the training files' contents and
the settings (:func:`checkpoint_key`), so a rerun with nothing changed trains nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pacs_workbench.core.files import sha256_file, write_atomic, write_json_atomic
from pacs_workbench.segment.data import HU_WINDOW, CaseVolume, SegmentationError, scale_intensity

#: Bump when a code change changes what training produces, so older checkpoints are retrained.
TRAINING_VERSION = "1"


@dataclass
class TrainConfig:
    """Settings of one training run (all part of the checkpoint's cache key)."""

    patch: int = 32  # crop edge in voxels (at the preprocessed spacing)
    channels: tuple[int, ...] = (8, 16, 32)
    iterations: int = 300  # optimizer steps
    batch_size: int = 4
    learning_rate: float = 3e-3
    dropout: float = 0.1  # also what the uncertainty's Monte Carlo passes would sample
    seed: int = 0
    threads: int = 2

    @classmethod
    def coerce(cls, value: TrainConfig | dict[str, Any] | None) -> TrainConfig:
        if isinstance(value, TrainConfig):
            return value
        given = dict(value or {})
        unknown = sorted(set(given) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown training setting(s): {', '.join(unknown)}")
        if "channels" in given:
            given["channels"] = tuple(int(c) for c in given["channels"])
        return cls(**given)


@dataclass
class TrainResult:
    """What training left: the network, its checkpoint and the curve."""

    network: Any
    checkpoint: Path
    checkpoint_sha256: str
    history: list[dict[str, float]] = field(default_factory=list)
    cached: bool = False
    seconds: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)


def device() -> Any:
    """A CUDA device when torch sees one, else the CPU."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def build_unet(config: TrainConfig) -> Any:
    """The MONAI U-Net: 1 input channel (scaled HU), 2 output classes (background, lesion)."""
    from monai.networks.nets import UNet

    channels = tuple(config.channels)
    return UNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=2,
        channels=channels,
        strides=tuple([2] * (len(channels) - 1)),
        num_res_units=1,
        dropout=config.dropout,
    )


def load_unet(checkpoint: str | os.PathLike[str], config: TrainConfig | dict[str, Any] | None) -> Any:
    """A U-Net of ``config``'s shape with the weights of ``checkpoint``, in eval mode on the CPU."""
    import torch

    network = build_unet(TrainConfig.coerce(config))
    network.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    network.eval()
    return network


def checkpoint_key(volumes: Sequence[tuple[str, str, str]], config: TrainConfig) -> str:
    """SHA-256 of the training files' contents (image and mask per case) and the settings."""
    files = [(case, sha256_file(image), sha256_file(mask)) for case, image, mask in sorted(volumes)]
    material = {"version": TRAINING_VERSION, "files": files, "config": asdict(config)}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def _transforms(patch: int) -> Any:
    from monai import transforms as mt

    keys = ["image", "label"]
    return mt.Compose(
        [
            mt.SpatialPadd(keys, spatial_size=(patch, patch, patch), mode="constant"),
            mt.RandSpatialCropd(keys, roi_size=(patch, patch, patch), random_size=False),
            mt.RandFlipd(keys, prob=0.5, spatial_axis=0),
            mt.RandFlipd(keys, prob=0.5, spatial_axis=1),
            mt.RandFlipd(keys, prob=0.5, spatial_axis=2),
            mt.RandRotated(
                keys, range_x=0.2, range_y=0.2, range_z=0.2, prob=0.3, mode=("bilinear", "nearest"),
                padding_mode="zeros",
            ),
            mt.RandScaleIntensityd("image", factors=0.1, prob=0.5),
            mt.RandShiftIntensityd("image", offsets=0.05, prob=0.5),
        ]
    )


def _items(cases: Sequence[CaseVolume]) -> list[dict[str, np.ndarray]]:
    items = []
    for case in cases:
        if case.reference is None:
            continue
        items.append({"image": scale_intensity(case.image)[None], "label": case.reference[None].astype(np.float32)})
    return items


def _batch(items: list[dict[str, np.ndarray]], transform: Any, rng: np.random.Generator, size: int) -> Any:
    import torch

    chosen = rng.integers(0, len(items), size=size)
    samples = [transform(items[int(i)]) for i in chosen]
    images = torch.stack([torch.as_tensor(np.asarray(s["image"])) for s in samples])
    labels = torch.stack([torch.as_tensor(np.asarray(s["label"])) for s in samples])
    return images.float(), labels.round().float()


def validation_dice(network: Any, cases: Sequence[CaseVolume], patch: int) -> float:
    """Median Dice of the network's masks on ``cases`` (whole volumes, sliding window)."""
    scores = [
        dice(predict_probability(network, c.image, patch) >= 0.5, c.reference) for c in cases if c.reference is not None
    ]
    return float(np.median(scores)) if scores else float("nan")


def dice(prediction: np.ndarray, reference: np.ndarray | None) -> float:
    """Dice coefficient of two binary masks (1.0 when both are empty)."""
    if reference is None:
        return float("nan")
    a, b = prediction.astype(bool), reference.astype(bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def fit_unet(
    train: Sequence[CaseVolume], validation: Sequence[CaseVolume], config: TrainConfig, progress: bool
) -> tuple[Any, list[dict[str, float]]]:
    """Train a fresh U-Net on ``train`` (no cache); returns it in eval mode and its curve on ``validation``."""
    import torch
    from monai.losses import DiceCELoss
    from monai.utils import set_determinism
    from tqdm.auto import tqdm

    torch.set_num_threads(max(1, config.threads))
    torch.manual_seed(config.seed)
    set_determinism(seed=config.seed)
    items = _items(train)
    network = build_unet(config)
    transform = _transforms(config.patch)
    transform.set_random_state(seed=config.seed)
    rng = np.random.default_rng(config.seed)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.Adam(network.parameters(), lr=config.learning_rate)
    history: list[dict[str, float]] = []
    every = max(1, config.iterations // 5)  # five points on the curve: scoring costs whole-volume passes
    running: list[float] = []
    for step in tqdm(range(1, config.iterations + 1), desc="train U-Net", disable=not progress):
        network.train()
        images, labels = _batch(items, transform, rng, config.batch_size)
        optimizer.zero_grad()
        loss = loss_fn(network(images), labels)
        loss.backward()
        optimizer.step()
        running.append(float(loss.item()))
        if step % every == 0 or step == config.iterations:
            point = {"step": float(step), "loss": float(np.mean(running))}
            if validation:
                point["validation_dice"] = validation_dice(network, validation, config.patch)
            history.append(point)
            running = []
    set_determinism(seed=None)
    network.eval()
    return network, history


def train_network(
    train: Sequence[CaseVolume],
    validation: Sequence[CaseVolume],
    files: Sequence[tuple[str, str, str]],
    model_dir: str | os.PathLike[str],
    config: TrainConfig | dict[str, Any] | None = None,
    *,
    progress: bool = True,
) -> TrainResult:
    """Train the U-Net on ``train`` (curve scored on ``validation``), or load the cached checkpoint.

    Parameters
    ----------
    train, validation
        Labelled cases (with ``reference``), split by patient.
    files
        ``(case_id, image_path, mask_path)`` of the training and validation cases: their contents
        and ``config`` form the cache key.
    model_dir
        Receives ``unet-<key>.pt`` and ``unet-<key>.json`` (settings and training curve).
    """
    import torch

    cfg = TrainConfig.coerce(config)
    if not any(c.reference is not None for c in train):
        raise SegmentationError("no labelled case to train on: every case lacks a reference mask")
    key = checkpoint_key(files, cfg)
    folder = Path(model_dir)
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint, record = folder / f"unet-{key[:16]}.pt", folder / f"unet-{key[:16]}.json"
    if checkpoint.is_file() and record.is_file():
        network = load_unet(checkpoint, cfg)
        meta = json.loads(record.read_text(encoding="utf-8"))
        return TrainResult(
            network, checkpoint, sha256_file(checkpoint), meta["history"], True, 0.0, meta["config"]
        )
    started = time.perf_counter()
    network, history = fit_unet(train, validation, cfg, progress)
    buffer = io.BytesIO()
    torch.save(network.state_dict(), buffer)
    write_atomic(checkpoint, lambda temp: temp.write_bytes(buffer.getvalue()))
    seconds = time.perf_counter() - started
    meta = {"config": asdict(cfg), "history": history, "cache_key": key, "seconds": round(seconds, 2),
            "n_train": len(train), "n_validation": len(validation)}
    write_json_atomic(record, meta, indent=1)
    return TrainResult(network, checkpoint, sha256_file(checkpoint), history, False, seconds, meta["config"])


def predict_probability(network: Any, image: np.ndarray, patch: int, *, flips: Sequence[int] = ()) -> np.ndarray:
    """Lesion probability over the whole volume (sliding window), averaged over the given flips.

    ``flips`` lists spatial axes (0, 1, 2 of the z, y, x array); the identity is always included.
    """
    stack = predict_stack(network, image, patch, flips=flips)
    return np.asarray(stack.mean(axis=0), dtype=np.float32)


def predict_stack(network: Any, image: np.ndarray, patch: int, *, flips: Sequence[int] = ()) -> np.ndarray:
    """One probability volume per test-time augmentation (the identity, then each flipped axis)."""
    import torch
    from monai.inferers import sliding_window_inference

    # A model brought along declares its own HU window (segment.external).
    x = torch.as_tensor(scale_intensity(image, getattr(network, "window", HU_WINDOW))[None, None])
    outputs = []
    with torch.no_grad():
        for axis in (None, *flips):
            view = x if axis is None else torch.flip(x, dims=[axis + 2])
            logits: Any = sliding_window_inference(view, (patch, patch, patch), 4, network, overlap=0.25)
            prob = torch.softmax(logits, dim=1)[:, 1:2] if logits.shape[1] > 1 else torch.sigmoid(logits)
            if axis is not None:
                prob = torch.flip(prob, dims=[axis + 2])
            outputs.append(prob[0, 0].cpu().numpy())
    return np.stack(outputs)
