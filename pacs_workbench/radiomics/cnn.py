"""A small 3-D CNN on lesion-centred crops: the crops, the network and a scikit-learn style classifier.

Crops (:func:`lesion_crop`, :func:`make_crops`) are cubes of ``size`` voxels sampled at ``spacing_mm``
around the centre of the lesion mask from a preprocessed volume (``03_preprocessing``), HU clipped to
:data:`HU_WINDOW` and scaled to [0, 1]; the mask is an optional second channel. A fixed physical scale
keeps the lesion's size visible to the network. Where the cube reaches past the volume it is padded
with air (and no mask) and the case is logged; a lesion that touches the volume's edge is logged as a
warning (part of it may lie outside the image). A case without a usable mask cannot be cropped: a
:class:`CropError` names it.

The network (:class:`LesionNet`) is a MONAI ``ResNet`` with one basic block per stage and few channels
(``widths``), a strided first convolution and global average pooling, whose pooled output is the
embedding (:meth:`LesionNet.embed`, the penultimate layer) under one linear logit. At the default
32-voxel crops it trains in a few seconds per epoch on one CPU core.

:class:`CNNClassifier` trains it: augmentation on every batch (flips on each axis, rotations of a few
degrees about each axis, intensity scaling and shift of the image channel), binary cross-entropy with
AdamW, early stopping on the validation loss of an inner split by patient (``groups``) of the training
data, the weights of the best epoch kept. It is deterministic for ``random_state`` (seeded torch and
NumPy generators, a fixed number of threads). The device is a GPU when torch sees one (``device="auto"``),
never required.
"""

from __future__ import annotations

import copy
import io
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.utils.validation import check_is_fitted

from pacs_workbench.radiomics.table import ModelingError

log = logging.getLogger(__name__)

#: CT intensities the network sees: HU clipped to this window, then scaled to [0, 1] (0 is air).
HU_WINDOW = (-1000.0, 400.0)
AIR_HU = -1000.0


class CropError(ModelingError):
    """A lesion crop cannot be made (no mask, an empty mask, a missing file or a mask off the image grid)."""


# --- crops ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CropSettings:
    """How lesion crops are cut: edge in voxels, isotropic sampling in mm, and the mask channel."""

    size: int = 32
    spacing_mm: float = 1.5
    with_mask: bool = True

    @property
    def channels(self) -> int:
        return 2 if self.with_mask else 1


@dataclass
class CropSet:
    """The crops of a table's cases, in its row order: ``arrays`` (n, channels, size, size, size), float32.

    ``info`` has one row per case: ``case_id``, ``padded_share`` (share of the cube outside the volume,
    filled with air) and ``lesion_at_edge`` (the mask touches the volume's border).
    """

    case_ids: NDArray[Any]
    arrays: NDArray[np.float32]
    info: pd.DataFrame
    settings: CropSettings = field(default_factory=CropSettings)
    seconds: float = 0.0  # what cutting them took


def scale_intensity(hu: NDArray[Any]) -> NDArray[np.float32]:
    """HU clipped to :data:`HU_WINDOW` and scaled to [0, 1]."""
    low, high = HU_WINDOW
    return ((np.clip(hu, low, high) - low) / (high - low)).astype(np.float32)


def _has_path(value: Any) -> bool:
    return isinstance(value, str | os.PathLike) and str(value).strip() != ""


def _read(path: Any, case_id: str, role: str) -> tuple[NDArray[Any], tuple[float, float, float], Any]:
    import SimpleITK as sitk

    if not _has_path(path):
        raise CropError(f"case {case_id}: no {role} file given, so no lesion crop can be made")
    if not Path(str(path)).is_file():
        raise CropError(f"case {case_id}: {role} file not found, so no lesion crop can be made")
    image = sitk.ReadImage(str(path), sitk.sitkFloat32 if role == "image" else sitk.sitkUInt8)
    sx, sy, sz = (float(v) for v in image.GetSpacing())
    return sitk.GetArrayFromImage(image), (sz, sy, sx), image


def lesion_crop(
    image_path: str | os.PathLike[str], mask_path: str | os.PathLike[str] | None, settings: CropSettings,
    case_id: str = "case",
) -> tuple[NDArray[np.float32], dict[str, Any]]:
    """One lesion-centred crop: (channels, size, size, size) float32, and what padding it needed.

    The cube is centred on the mask's centre of mass (its first sample moved to the nearest voxel centre)
    and sampled (trilinear for the image, nearest for the mask) every ``settings.spacing_mm`` mm on each axis.

    Raises
    ------
    CropError
        No mask path, a missing image or mask file, an empty mask, or a mask whose grid differs from the image's.
    """
    from scipy import ndimage

    volume, spacing, _ = _read(image_path, case_id, "image")
    mask, _, _ = _read(mask_path, case_id, "mask")
    if mask.shape != volume.shape:
        raise CropError(f"case {case_id}: the mask's grid {mask.shape} differs from the image's {volume.shape}")
    lesion = mask > 0
    if not lesion.any():
        raise CropError(f"case {case_id}: the mask is empty, so there is no lesion to centre a crop on")
    centre = np.array(ndimage.center_of_mass(lesion))
    axes = []
    for a in range(3):
        step = settings.spacing_mm / spacing[a]
        # The first sample on a voxel centre: at the volume's own spacing nothing is interpolated.
        start = float(np.floor(centre[a] - (settings.size - 1) / 2.0 * step + 0.5))
        axes.append(start + step * np.arange(settings.size, dtype=float))
    grid = np.stack(np.meshgrid(*axes, indexing="ij"))
    image_crop = ndimage.map_coordinates(volume, grid, order=1, mode="constant", cval=AIR_HU)
    channels = [scale_intensity(image_crop)]
    if settings.with_mask:
        channels.append(ndimage.map_coordinates(lesion.astype(np.float32), grid, order=0, mode="constant", cval=0.0))
    shape = np.array(volume.shape)[:, None]
    flat = grid.reshape(3, -1)
    outside = np.any((flat < -0.5) | (flat > shape - 0.5), axis=0)
    border = lesion[0].any() or lesion[-1].any() or lesion[:, 0].any() or lesion[:, -1].any() \
        or lesion[:, :, 0].any() or lesion[:, :, -1].any()  # fmt: skip
    padded = float(outside.mean())
    info: dict[str, Any] = {"case_id": case_id, "padded_share": padded, "lesion_at_edge": bool(border)}
    if border:
        log.warning("case %s: the lesion touches the volume's edge; the crop is padded with air beyond it "
                    "and part of the lesion may lie outside the image", case_id)  # fmt: skip
    elif padded > 0:
        log.info("case %s: the crop reaches past the volume's edge; %.0f%% of it padded with air",
                 case_id, 100 * padded)  # fmt: skip
    return np.stack(channels).astype(np.float32), info


def make_crops(
    table: pd.DataFrame,
    settings: CropSettings,
    *,
    id_col: str = "case_id",
    image_col: str = "image",
    mask_col: str = "mask",
) -> CropSet:
    """Crops of every row of ``table`` (its image and mask columns), in row order.

    Raises
    ------
    CropError
        When the table has no image or mask column, or any case lacks a usable mask or image (every such
        case is counted, the first few named).
    """
    missing = [c for c in (image_col, mask_col) if c not in table.columns]
    if missing:
        raise CropError(
            f"the table has no {' or '.join(repr(c) for c in missing)} column: the CNN needs each case's "
            "preprocessed image and lesion mask (03_preprocessing's cases table carries them)"
        )
    ids = table[id_col].astype(str).to_numpy() if id_col in table.columns else np.arange(len(table)).astype(str)
    arrays, infos, problems = [], [], []
    for case_id, image, mask in zip(ids, table[image_col], table[mask_col], strict=True):
        try:
            crop, info = lesion_crop(image, mask, settings, str(case_id))
        except CropError as exc:
            problems.append(str(exc))
            continue
        arrays.append(crop)
        infos.append(info)
    if problems:
        raise CropError(
            f"{len(problems)} of {len(ids)} case(s) cannot be cropped for the CNN: " + "; ".join(problems[:3])
            + ("; ..." if len(problems) > 3 else "")
            + ". Give every case a mask (reference or model mask from 04_segmentation) or turn the CNN off."
        )
    frame = pd.DataFrame(infos)
    padded = int((frame["padded_share"] > 0).sum())
    if padded:
        log.info("%d of %d crops padded with air where they reach past their volume (%d lesions touch the edge)",
                 padded, len(frame), int(frame["lesion_at_edge"].sum()))  # fmt: skip
    return CropSet(ids, np.stack(arrays).astype(np.float32), frame, settings)


# --- the network ---------------------------------------------------------------------------------


def device(name: str = "auto") -> Any:
    """The torch device: ``"auto"`` is a CUDA GPU when torch sees one, else the CPU."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _lesion_net_class() -> Any:
    import torch
    from monai.networks.nets import ResNet

    class LesionNet(torch.nn.Module):  # type: ignore[misc]
        """MONAI ResNet (basic blocks, one per stage, strided stem, global average pool) and a linear logit."""

        def __init__(self, in_channels: int, widths: Sequence[int], dropout: float) -> None:
            super().__init__()
            widths = [int(w) for w in widths]
            self.backbone = ResNet(
                "basic", [1] * len(widths), widths, spatial_dims=3, n_input_channels=in_channels, conv1_t_size=3,
                conv1_t_stride=2, no_max_pool=True, feed_forward=False,
            )  # fmt: skip
            self.dropout = torch.nn.Dropout(dropout)
            self.head = torch.nn.Linear(widths[-1], 1)
            self.embedding_dim = widths[-1]

        def embed(self, x: Any) -> Any:
            """The penultimate layer: the pooled features the logit is computed from."""
            return self.backbone(x)

        def forward(self, x: Any) -> Any:
            return self.head(self.dropout(self.backbone(x)))

    return LesionNet


def build_network(in_channels: int, widths: Sequence[int] = (8, 16, 32, 64), dropout: float = 0.2) -> Any:
    """A fresh :class:`LesionNet` (MONAI ResNet backbone; weights from torch's current seed).

    MONAI's ResNet has four stages; ``widths`` gives the channels of each.
    """
    if len(widths) != 4:
        raise ValueError(f"widths must give the channels of the 4 ResNet stages, got {tuple(widths)}")
    return _lesion_net_class()(in_channels, widths, dropout)


def _rotation_batch(n: int, max_radians: float, flips: bool, rng: np.random.Generator) -> NDArray[np.float32]:
    """(n, 3, 4) affine matrices: random small rotations about each axis times random axis flips."""
    mats = np.zeros((n, 3, 4), dtype=np.float32)
    for i in range(n):
        ax, ay, az = rng.uniform(-max_radians, max_radians, 3)
        rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
        ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
        rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
        signs = np.where(rng.random(3) < 0.5, -1.0, 1.0) if flips else np.ones(3)
        mats[i, :, :3] = rx @ ry @ rz @ np.diag(signs)
    return mats


# --- the classifier ------------------------------------------------------------------------------


class CNNClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """A small 3-D CNN for a binary outcome from lesion crops, scikit-learn style.

    Parameters
    ----------
    widths
        Channels of the four ResNet stages; the last is the embedding's size.
    dropout
        Before the logit.
    epochs, patience
        At most ``epochs`` passes over the training part; stop after ``patience`` epochs without a lower
        validation loss. The weights of the best epoch are kept.
    batch_size, learning_rate, weight_decay
        AdamW mini-batches.
    validation_fraction
        Share of the training patients (``groups`` of :meth:`fit`) held out for early stopping, stratified.
    augment, rotate_degrees, flip, intensity_jitter
        Training-time augmentation: rotations up to ``rotate_degrees`` about each axis, random flips of each
        axis, the image channel scaled by ``1 + U(-j, j)`` and shifted by ``U(-j, j)``.
    test_time_flips
        Predict (and embed) as the mean over the crop and its flips along each axis (4 passes).
    random_state
        Seed of the weights, the split, the batches and the augmentation.
    threads
        torch threads (fixed, for determinism).
    device
        ``"auto"`` (a GPU when torch sees one), ``"cpu"`` or a torch device name.

    Attributes
    ----------
    network_
        The trained :class:`LesionNet` (eval mode).
    history_
        One record per epoch: ``epoch``, ``train_loss``, ``validation_loss``, ``validation_auc``.
    best_epoch_
        The epoch whose weights were kept.
    classes_, n_channels_, crop_shape_, embedding_dim_
        ``[0, 1]``, the crops' channels and spatial shape, the embedding's size.
    n_train_, n_validation_
        Crops trained on and held out for early stopping.
    """

    def __init__(
        self,
        widths: tuple[int, ...] = (8, 16, 32, 64),
        dropout: float = 0.2,
        epochs: int = 30,
        patience: int = 8,
        batch_size: int = 8,
        learning_rate: float = 3e-3,
        weight_decay: float = 1e-4,
        validation_fraction: float = 0.2,
        augment: bool = True,
        rotate_degrees: float = 10.0,
        flip: bool = True,
        intensity_jitter: float = 0.05,
        test_time_flips: bool = True,
        random_state: int = 0,
        threads: int = 1,
        device: str = "auto",
    ) -> None:
        self.widths = widths
        self.dropout = dropout
        self.epochs = epochs
        self.patience = patience
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.validation_fraction = validation_fraction
        self.augment = augment
        self.rotate_degrees = rotate_degrees
        self.flip = flip
        self.intensity_jitter = intensity_jitter
        self.test_time_flips = test_time_flips
        self.random_state = random_state
        self.threads = threads
        self.device = device

    # -- fitting --

    def _split(self, y: NDArray[np.int64], groups: NDArray[Any]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Inner training and validation positions, split by patient and stratified by outcome."""
        n_splits = max(2, round(1.0 / self.validation_fraction)) if self.validation_fraction > 0 else 0
        if n_splits == 0 or len(np.unique(groups)) < n_splits or min(np.bincount(y, minlength=2)) < n_splits:
            return np.arange(y.size), np.arange(0)
        cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=self.random_state)
        train, validation = next(cv.split(np.zeros((y.size, 1)), y, groups))
        return train.astype(np.int64), validation.astype(np.int64)

    def fit(self, X: NDArray[Any], y: Any, groups: Any = None) -> CNNClassifier:
        """Train on crops ``X`` (n, channels, d, h, w) with outcomes ``y``; ``groups``: patient per crop."""
        import torch

        X = np.asarray(X, dtype=np.float32)
        yy = np.asarray(y).astype(np.int64)
        if X.ndim != 5:
            raise ValueError(f"X must be crops of shape (n, channels, d, h, w), got {X.shape}")
        if set(np.unique(yy)) - {0, 1} or len(np.unique(yy)) < 2:
            raise ValueError("y must hold both outcomes, as 0 and 1")
        gg = np.asarray(groups if groups is not None else np.arange(yy.size)).astype(str)
        # Left as set afterwards: restoring torch's default between folds in a worker process that also
        # runs LightGBM's OpenMP threads was seen to hang the worker.
        torch.set_num_threads(max(1, int(self.threads)))
        torch.manual_seed(self.random_state)
        rng = np.random.default_rng(self.random_state)
        dev = device(self.device)
        train, validation = self._split(yy, gg)
        network = build_network(X.shape[1], self.widths, self.dropout).to(dev)
        optimizer = torch.optim.AdamW(network.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        Xt = torch.as_tensor(X)
        yt = torch.as_tensor(yy, dtype=torch.float32)
        best_loss, best_state, best_epoch, waited = math.inf, None, 0, 0
        history = []
        for epoch in range(1, int(self.epochs) + 1):
            network.train()
            order = rng.permutation(train)
            losses = []
            for start in range(0, order.size, int(self.batch_size)):
                batch = order[start : start + int(self.batch_size)]
                if batch.size < 2:  # batch norm needs two samples
                    continue
                images = self._augment(Xt[batch], rng).to(dev)
                optimizer.zero_grad()
                loss = loss_fn(network(images)[:, 0], yt[batch].to(dev))
                loss.backward()
                optimizer.step()
                losses.append(float(loss.item()))
            record = {"epoch": float(epoch), "train_loss": float(np.mean(losses)) if losses else float("nan")}
            watched = record["train_loss"]
            if validation.size:
                logits = self._logits(network, X[validation], dev)
                prob = 1.0 / (1.0 + np.exp(-logits))
                yv = yy[validation]
                eps = 1e-7
                record["validation_loss"] = float(-np.mean(yv * np.log(prob + eps) + (1 - yv) * np.log(1 - prob + eps)))
                record["validation_auc"] = float(roc_auc_score(yv, logits)) if 0 < yv.sum() < yv.size else float("nan")
                watched = record["validation_loss"]
            history.append(record)
            if watched < best_loss - 1e-4:
                best_loss, best_epoch, waited = watched, epoch, 0
                best_state = copy.deepcopy(network.state_dict())
            else:
                waited += 1
                if waited >= int(self.patience):
                    break
        if best_state is not None:
            network.load_state_dict(best_state)
        network.eval()
        self.network_ = network
        self.history_ = history
        self.best_epoch_ = best_epoch
        self.classes_ = np.array([0, 1])
        self.n_channels_ = int(X.shape[1])
        self.crop_shape_ = tuple(int(s) for s in X.shape[2:])
        self.embedding_dim_ = int(network.embedding_dim)
        self.n_train_ = int(train.size)
        self.n_validation_ = int(validation.size)
        return self

    def _augment(self, images: Any, rng: np.random.Generator) -> Any:
        """Random flips, small rotations and intensity jitter of a batch (image channel 0, mask channel 1)."""
        import torch
        from torch.nn import functional

        if not self.augment:
            return images
        n = images.shape[0]
        theta = torch.as_tensor(_rotation_batch(n, math.radians(self.rotate_degrees), self.flip, rng))
        grid = functional.affine_grid(theta, list(images.shape), align_corners=False)
        # Air outside the rotated cube: 0 on the scaled image channel and 0 on the mask.
        def sample(channels: Any, mode: str) -> Any:
            return functional.grid_sample(channels, grid, mode=mode, padding_mode="zeros", align_corners=False)

        parts = [sample(images[:, :1], "bilinear")]
        if images.shape[1] > 1:
            parts.append(sample(images[:, 1:], "nearest"))
        j = float(self.intensity_jitter)
        if j > 0:
            scale = torch.as_tensor(1.0 + rng.uniform(-j, j, (n, 1, 1, 1, 1)), dtype=torch.float32)
            shift = torch.as_tensor(rng.uniform(-j, j, (n, 1, 1, 1, 1)), dtype=torch.float32)
            parts[0] = parts[0] * scale + shift
        return torch.cat(parts, dim=1)

    # -- prediction --

    def _run(self, network: Any, X: NDArray[Any], dev: Any, method: str, batch: int = 64) -> NDArray[np.float64]:
        import torch

        views: list[tuple[int, ...]] = [()]
        if getattr(self, "test_time_flips", False):
            views += [(2,), (3,), (4,)]
        outputs = []
        with torch.no_grad():
            for start in range(0, len(X), batch):
                chunk = torch.as_tensor(np.asarray(X[start : start + batch], dtype=np.float32)).to(dev)
                passes = []
                for axes in views:
                    view = torch.flip(chunk, dims=list(axes)) if axes else chunk
                    passes.append(network.embed(view) if method == "embed" else network(view))
                out = torch.stack(passes).mean(dim=0)
                outputs.append(out.detach().cpu().numpy().astype(np.float64))
        width = network.embedding_dim if method == "embed" else 1
        return np.concatenate(outputs) if outputs else np.zeros((0, width))

    def _logits(self, network: Any, X: NDArray[Any], dev: Any) -> NDArray[np.float64]:
        network.eval()
        return self._run(network, X, dev, "logit")[:, 0]

    def _check(self, X: Any) -> NDArray[np.float32]:
        check_is_fitted(self, "network_")
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 5 or X.shape[1] != self.n_channels_ or tuple(X.shape[2:]) != self.crop_shape_:
            raise ValueError(
                f"crops must have shape (n, {self.n_channels_}, {', '.join(map(str, self.crop_shape_))}), got {X.shape}"
            )
        return X

    def decision_function(self, X: Any) -> NDArray[np.float64]:
        """The logit of each crop."""
        return self._logits(self.network_, self._check(X), next(self.network_.parameters()).device)

    def predict_proba(self, X: Any) -> NDArray[np.float64]:
        """(n, 2): probability of no event and of the event."""
        p = 1.0 / (1.0 + np.exp(-self.decision_function(X)))
        return np.column_stack([1.0 - p, p])

    def predict(self, X: Any) -> NDArray[np.int64]:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(np.int64)

    def transform(self, X: Any) -> NDArray[np.float64]:
        """The penultimate layer (the pooled features under the logit): (n, ``embedding_dim_``)."""
        self.network_.eval()
        return self._run(self.network_, self._check(X), next(self.network_.parameters()).device, "embed")

    # -- persistence --

    def state_bytes(self) -> bytes:
        """The trained weights as bytes (``torch.save`` of the state dict)."""
        import torch

        check_is_fitted(self, "network_")
        buffer = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in self.network_.state_dict().items()}, buffer)
        return buffer.getvalue()

    def load_state(
        self, data: bytes, n_channels: int, crop_shape: Sequence[int], record: dict[str, Any]
    ) -> CNNClassifier:
        """Set the fitted state from :meth:`state_bytes` and the training record (no training)."""
        import torch

        network = build_network(n_channels, self.widths, self.dropout)
        network.load_state_dict(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))
        network.to(device(self.device)).eval()
        self.network_ = network
        self.history_ = list(record.get("history", []))
        self.best_epoch_ = int(record.get("best_epoch", 0))
        self.classes_ = np.array([0, 1])
        self.n_channels_ = int(n_channels)
        self.crop_shape_ = tuple(int(s) for s in crop_shape)
        self.embedding_dim_ = int(network.embedding_dim)
        self.n_train_ = int(record.get("n_train", 0))
        self.n_validation_ = int(record.get("n_validation", 0))
        return self
