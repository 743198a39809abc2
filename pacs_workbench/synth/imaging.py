"""Synthetic chest CT volumes: scanners, protocols, anatomy, nodules and vendor habits.

The phantom is a miniature chest (64 x 64 pixels of about 1.0-1.4 mm) that still has what
image analysis meets in practice: air around the body (-1000 HU), subcutaneous fat, chest
wall and mediastinum (~40 HU), textured lung parenchyma (~-850 HU) with vessels, a spine,
contrast enhancement, and one or more nodules drawn at their real size in mm.

Nodules are star-shaped solids: the radius along direction ``u`` is ``R * (1 + a f(u))``
where ``f`` is a sum of zonal cosine waves around random axes (a cheap stand-in for
spherical harmonics) and the amplitude ``a`` grows with the nodule's irregularity. The
inside carries a smooth random texture whose contrast grows with its heterogeneity.
Malignant nodules grow with a volume doubling time; benign ones stay put. Each vendor
shifts and scales intensities and has its own noise level and noise texture, so
harmonization has something to do.

All coordinates are DICOM patient coordinates (LPS, mm): ``x`` to the patient's left,
``y`` to the back, ``z`` to the head. Arrays are indexed ``[k, row, column]`` with ``k``
running along increasing ``z``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

#: In-plane matrix of every axial CT image.
MATRIX = 64


@dataclass(frozen=True)
class Vendor:
    """What one manufacturer's scanners do differently.

    Attributes mirror DICOM where they can: ``rescale_intercept`` is
    (0028,1052) Rescale Intercept, ``signed`` is (0028,0103) Pixel Representation,
    ``bits_stored`` is (0028,0101) Bits Stored; ``hu_shift``/``hu_gain``/``noise_sd``/
    ``noise_smooth`` describe the image itself; ``descending`` is True when
    (0020,0013) Instance Number 1 is the most cranial slice.
    """

    key: str
    thicknesses: tuple[float, ...]
    kernels: tuple[str, str]  # (soft tissue, lung)
    rescale_intercept: float
    signed: bool
    bits_stored: int
    hu_shift: float
    hu_gain: float
    noise_sd: float
    noise_smooth: float
    descending: bool
    body_parts: tuple[str, ...]  # "" means (0018,0015) Body Part Examined is left out
    localizer_name: str
    overlap_probability: float = 0.0


VENDORS: dict[str, Vendor] = {
    "siemens": Vendor(
        key="siemens",
        thicknesses=(1.0, 1.5, 3.0, 5.0),
        kernels=("B31f", "B70f"),
        rescale_intercept=-1024.0,
        signed=False,
        bits_stored=12,
        hu_shift=0.0,
        hu_gain=0.0,
        noise_sd=13.0,
        noise_smooth=0.5,
        descending=True,
        body_parts=("CHEST",),
        localizer_name="Topogram  0.6  T20s",
    ),
    "ge": Vendor(
        key="ge",
        thicknesses=(1.25, 2.5, 5.0),
        kernels=("STANDARD", "LUNG"),
        rescale_intercept=-1024.0,
        signed=True,
        bits_stored=16,
        hu_shift=14.0,
        hu_gain=0.02,
        noise_sd=17.0,
        noise_smooth=0.9,
        descending=True,
        body_parts=("CHEST", "LUNG"),
        localizer_name="Scout",
    ),
    "philips": Vendor(
        key="philips",
        thicknesses=(1.0, 2.0, 3.0, 4.0),
        kernels=("B", "L"),
        rescale_intercept=-1000.0,
        signed=False,
        bits_stored=12,
        hu_shift=-18.0,
        hu_gain=-0.015,
        noise_sd=11.0,
        noise_smooth=0.6,
        descending=False,
        body_parts=("THORAX", "CHEST"),
        localizer_name="Surview",
        overlap_probability=0.4,
    ),
    "canon": Vendor(
        key="canon",
        thicknesses=(1.0, 2.0, 3.0, 5.0),
        kernels=("FC13", "FC52"),
        rescale_intercept=0.0,
        signed=True,
        bits_stored=16,
        hu_shift=7.0,
        hu_gain=0.03,
        noise_sd=15.0,
        noise_smooth=0.75,
        descending=True,
        body_parts=("LUNG", ""),
        localizer_name="Scanogram",
    ),
}


@dataclass(frozen=True)
class Scanner:
    """One installed scanner: (0008,0070) Manufacturer, (0008,1090) Manufacturer's Model Name,
    (0018,1020) Software Versions, (0008,1010) Station Name, (0018,1000) Device Serial Number."""

    vendor: str
    manufacturer: str
    model: str
    software: str
    station: str
    serial: str


@dataclass(frozen=True)
class Protocol:
    """Acquisition and reconstruction settings of one CT series."""

    vendor: str
    contrast: bool
    thickness: float
    spacing: float
    lung_kernel: bool
    kernel: str
    kvp: int
    tube_current: int
    pixel_spacing: float
    n_slices: int
    body_part: str
    descending: bool
    # The site's calibration on top of the vendor's (:class:`pacs_workbench.synth.sites.Site`).
    hu_shift: float = 0.0
    hu_gain: float = 0.0


@dataclass(frozen=True)
class Anatomy:
    """Per-patient body shape (mm) and vessel tree, fixed across the patient's studies."""

    body_a: float
    body_b: float
    vessels: tuple[tuple[float, float, float, float, float, float, float], ...]


@dataclass(frozen=True)
class NoduleSpec:
    """One nodule in body coordinates (mm from the body centre) at the baseline study."""

    index: int
    center: tuple[float, float, float]
    diameter_mm: float
    irregularity: float
    heterogeneity: float
    malignant: bool
    doubling_days: float
    lobe: str
    calcified: bool
    shape_seed: int
    attenuation: float


@dataclass(frozen=True)
class Pose:
    """Where the body sits in the scanner for one study (table shift, mm)."""

    dx: float
    dy: float
    dz: float


@dataclass
class RenderedSeries:
    """One rendered CT series.

    ``hu`` and ``masks`` are ``[k, row, column]`` with ``k`` along increasing z;
    ``z`` holds the slice positions (mm), ``origin_xy`` the patient x and y of pixel (0, 0).
    """

    hu: np.ndarray
    z: np.ndarray
    origin_xy: tuple[float, float]
    pixel_spacing: float
    masks: list[np.ndarray] = field(default_factory=list)
    diameters: list[float] = field(default_factory=list)
    centers_mm: list[tuple[float, float, float]] = field(default_factory=list)


LOBES = ("RUL", "RML", "RLL", "LUL", "LLL")
LOBE_NAMES = {
    "RUL": "right upper lobe",
    "RML": "right middle lobe",
    "RLL": "right lower lobe",
    "LUL": "left upper lobe",
    "LLL": "left lower lobe",
}


def plan_protocol(scanner: Scanner, rng: np.random.Generator, body_a: float) -> Protocol:
    """Draw one series' settings the way a site's protocols vary.

    Parameters
    ----------
    scanner
        The scanner that acquires the study.
    rng
        Study-level random generator.
    body_a
        Half width of the body (mm); the reconstruction field of view follows it.
    """
    vendor = VENDORS[scanner.vendor]
    thickness = float(rng.choice(vendor.thicknesses))
    spacing = thickness
    if thickness == 2.0 and rng.random() < vendor.overlap_probability:
        spacing = 1.0  # overlapping reconstruction, (0018,0088) < (0018,0050)
    n_slices = int(np.clip(round(60.0 / spacing), 20, 60))
    lung_kernel = bool(rng.random() < 0.6)
    fov = 2.0 * body_a + float(rng.uniform(8.0, 20.0))
    return Protocol(
        vendor=vendor.key,
        contrast=bool(rng.random() < 0.3),
        thickness=thickness,
        spacing=spacing,
        lung_kernel=lung_kernel,
        kernel=vendor.kernels[1] if lung_kernel else vendor.kernels[0],
        kvp=int(rng.choice([100, 120, 120, 120, 140])),
        tube_current=int(rng.integers(40, 260)),
        pixel_spacing=round(fov / MATRIX, 6),
        n_slices=n_slices,
        body_part=str(rng.choice(vendor.body_parts)),
        descending=vendor.descending,
    )


def plan_anatomy(rng: np.random.Generator) -> Anatomy:
    """A patient's body size and a handful of lung vessels from the hila outwards."""
    a = float(rng.uniform(30.0, 36.0))
    b = a * float(rng.uniform(0.68, 0.78))
    vessels = []
    for _ in range(int(rng.integers(6, 11))):
        side = 1.0 if rng.random() < 0.5 else -1.0
        start = (side * 0.18 * a, float(rng.uniform(-0.1, 0.2)) * b, float(rng.uniform(-20, 20)))
        angle = float(rng.uniform(-1.2, 1.2))
        length = float(rng.uniform(0.35, 0.6)) * a
        end = (
            start[0] + side * length * np.cos(angle),
            start[1] + length * np.sin(angle),
            start[2] + float(rng.uniform(-25, 25)),
        )
        vessels.append((*start, *end, float(rng.uniform(0.7, 1.6))))
    return Anatomy(body_a=a, body_b=b, vessels=tuple(vessels))


def lung_geometry(anatomy: Anatomy, z: np.ndarray | float) -> tuple[float, np.ndarray, np.ndarray, float]:
    """Lung centre x offset, semi-axes (x, y) at body height ``z`` and centre y (mm)."""
    a, b = anatomy.body_a, anatomy.body_b
    # Lungs narrow to a dome at the apex (positive z is cranial), about 75 mm above centre.
    taper = np.sqrt(1.0 - np.clip((np.asarray(z, dtype=float) - 20.0) / 55.0, 0.0, 1.0) ** 2)
    return 0.47 * a, 0.37 * a * taper, 0.72 * b * taper, -0.05 * b


def assign_lobe(center: tuple[float, float, float]) -> str:
    """Lobe of a body-coordinate position (x < 0 is the patient's right)."""
    x, y, z = center
    if x < 0:
        if z > 8.0:
            return "RUL"
        if z > -10.0 and y < 0:
            return "RML"
        return "RLL"
    return "LUL" if z > -4.0 else "LLL"


def place_nodule(
    anatomy: Anatomy, rng: np.random.Generator, diameter: float, z: float, side: float | None = None
) -> tuple[float, float, float]:
    """A nodule centre inside a lung, far enough from its edge for the nodule's size."""
    cx, sx, sy, cy = lung_geometry(anatomy, z)
    side = side if side is not None else (1.0 if rng.random() < 0.5 else -1.0)
    radius = diameter / 2.0
    room_x = max(0.0, float(sx) - 0.8 * radius)
    room_y = max(0.0, float(sy) - 0.8 * radius)
    r = float(np.sqrt(rng.uniform(0.0, 1.0))) * 0.85
    t = float(rng.uniform(0.0, 2.0 * np.pi))
    return (side * cx + r * room_x * np.cos(t), cy + r * room_y * np.sin(t), z)


def diameter_at(nodule: NoduleSpec, days: float) -> float:
    """Nodule diameter ``days`` after baseline: exponential volume growth if malignant."""
    if not nodule.malignant:
        return nodule.diameter_mm
    return float(min(nodule.diameter_mm * 2.0 ** (days / (3.0 * nodule.doubling_days)), 26.0))


def _shape_terms(nodule: NoduleSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    rng = np.random.default_rng(nodule.shape_seed)
    n_terms = 10
    axes = rng.normal(size=(n_terms, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    # Irregular (spiculated) nodules have more energy in high angular frequencies.
    top = 3 + round(6 * nodule.irregularity)
    freqs = rng.integers(2, top + 1, size=n_terms).astype(float)
    phases = rng.uniform(0, 2 * np.pi, size=n_terms)
    weights = rng.uniform(0.5, 1.0, size=n_terms)
    weights /= np.sqrt(np.sum(weights**2) / 2.0)
    amplitude = 0.04 + 0.32 * nodule.irregularity
    return axes, freqs, phases, weights, amplitude


def radius_field(nodule: NoduleSpec, diameter: float, directions: np.ndarray) -> np.ndarray:
    """Surface radius (mm) along unit ``directions`` (``[..., 3]``)."""
    axes, freqs, phases, weights, amplitude = _shape_terms(nodule)
    cos = np.clip(directions @ axes.T, -1.0, 1.0)
    wave = np.cos(freqs * np.arccos(cos) + phases) @ weights
    return (diameter / 2.0) * np.clip(1.0 + amplitude * wave, 0.45, 1.9)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: tuple[float, ...]) -> np.ndarray:
    field_ = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma=sigma, mode="wrap")
    sd = float(field_.std())
    return field_ / sd if sd > 0 else field_


def _anatomy_hu(
    anatomy: Anatomy,
    bx: np.ndarray,
    by: np.ndarray,
    bz: np.ndarray,
    contrast: bool,
    with_vessels: bool = True,
) -> np.ndarray:
    """HU of the noiseless phantom at body coordinates (broadcastable arrays)."""
    a, b = anatomy.body_a, anatomy.body_b
    shape = np.broadcast_shapes(bx.shape, by.shape, bz.shape)
    hu = np.full(shape, -1000.0, dtype=np.float32)
    e_body = (bx / a) ** 2 + (by / b) ** 2
    hu[np.broadcast_to(e_body <= 1.0, shape)] = -100.0  # subcutaneous fat
    inner = np.broadcast_to(e_body <= 0.86, shape)
    hu[inner] = 70.0 if contrast else 40.0  # chest wall and mediastinum
    aorta = np.broadcast_to((bx - 0.16 * a) ** 2 + (by - 0.25 * b) ** 2 <= (0.11 * a) ** 2, shape)
    hu[aorta] = 260.0 if contrast else 42.0
    spine = np.broadcast_to(bx**2 + (by - 0.8 * b) ** 2 <= (0.14 * a) ** 2, shape)
    hu[spine] = 650.0
    cx, sx, sy, cy = lung_geometry(anatomy, bz)
    lung = np.zeros(shape, dtype=bool)
    for side in (-1.0, 1.0):
        u = (bx - side * cx) / np.maximum(sx, 1e-6)
        # Hemidiaphragm domes: the lung base is highest mid-lung, lowest at the costophrenic angle.
        lung |= (u**2 + ((by - cy) / np.maximum(sy, 1e-6)) ** 2 <= 1.0) & (bz > -50.0 + 8.0 * np.clip(1.0 - u**2, 0, 1))
    hu[lung] = -860.0
    if with_vessels:
        points = np.stack(np.broadcast_arrays(bx, by, bz), axis=-1)[lung]
        if points.size:
            vessel_hu = np.full(points.shape[0], -860.0, dtype=np.float32)
            for x0, y0, z0, x1, y1, z1, radius in anatomy.vessels:
                p0 = np.array([x0, y0, z0])
                v = np.array([x1 - x0, y1 - y0, z1 - z0])
                t = np.clip(((points - p0) @ v) / float(v @ v), 0.0, 1.0)
                dist = np.linalg.norm(points - p0 - t[:, None] * v, axis=1)
                # Vessels taper towards the periphery.
                inside = dist <= radius * (1.0 - 0.5 * t)
                vessel_hu[inside] = 220.0 if contrast else 35.0
            hu[lung] = vessel_hu
    return hu


@dataclass(frozen=True)
class _SampleGrid:
    """Where a series is sampled: voxel centres in x and y, sub-slice and slice positions in z (mm)."""

    xs: np.ndarray
    ys: np.ndarray
    zs: np.ndarray
    z: np.ndarray
    sub_slices: int


def _render_nodule(
    hu: np.ndarray,
    grid: _SampleGrid,
    nodule: NoduleSpec,
    diameter: float,
    center: np.ndarray,
    protocol: Protocol,
    rng: np.random.Generator,
) -> np.ndarray:
    """Blend one nodule into the sub-slice volume ``hu`` (in place); return its mask per slice."""
    xs, ys, zs, z, m = grid.xs, grid.ys, grid.zs, grid.z, grid.sub_slices
    ps = protocol.pixel_spacing
    n = protocol.n_slices
    center_sub = m // 2
    mask = np.zeros((n, MATRIX, MATRIX), dtype=bool)
    reach = diameter / 2.0 * 1.9 + 2.0 * ps
    ix = np.nonzero(np.abs(xs - center[0]) <= reach)[0]
    iy = np.nonzero(np.abs(ys - center[1]) <= reach)[0]
    iz = np.nonzero(np.abs(zs - center[2]) <= reach + protocol.thickness)[0]
    if ix.size and iy.size and iz.size:
        sx, sy, sz = slice(ix[0], ix[-1] + 1), slice(iy[0], iy[-1] + 1), slice(iz[0], iz[-1] + 1)
        vx = (xs[sx] - center[0])[None, None, :]
        vy = (ys[sy] - center[1])[None, :, None]
        vz = (zs[sz] - center[2])[:, None, None]
        vec = np.stack(np.broadcast_arrays(vx, vy, vz), axis=-1)
        dist = np.linalg.norm(vec, axis=-1)
        direction = vec / np.maximum(dist, 1e-6)[..., None]
        surface = radius_field(nodule, diameter, direction)
        alpha = 1.0 / (1.0 + np.exp(-(surface - dist) / (0.3 * ps)))
        inner = _smooth_noise(rng, dist.shape, (1.2 / protocol.thickness * m, 1.2 / ps, 1.2 / ps))
        base = nodule.attenuation + (25.0 if protocol.contrast else 0.0)
        value = base + (12.0 + 110.0 * nodule.heterogeneity) * inner
        if nodule.heterogeneity > 0.55 and diameter > 9.0:
            # Low-attenuation (necrotic) core in large heterogeneous nodules.
            core = np.clip(1.0 - dist / (0.45 * surface), 0.0, 1.0)
            value = value - 220.0 * (nodule.heterogeneity - 0.55) * core
        block = hu[sz, sy, sx]
        hu[sz, sy, sx] = (block * (1.0 - alpha) + value * alpha).astype(np.float32)
        inside = dist <= surface
        # Mask from the sub-slice at each slice's centre (the voxel centre).
        k_sub = np.arange(iz[0], iz[-1] + 1)
        centre_rows = (k_sub % m) == center_sub
        ks = k_sub[centre_rows] // m
        mask[ks[:, None, None], iy[None, :, None], ix[None, None, :]] = inside[centre_rows]
    for k in range(n):
        if mask[k].any():
            mask[k] = ndimage.binary_fill_holes(mask[k])
    if not mask.any():
        # A nodule thinner than the slice spacing still marks its nearest voxel.
        k = int(np.argmin(np.abs(z - center[2])))
        mask[k, int(np.argmin(np.abs(ys - center[1]))), int(np.argmin(np.abs(xs - center[0])))] = True
    return mask


def render_series(
    anatomy: Anatomy,
    nodules: list[NoduleSpec],
    diameters: list[float],
    protocol: Protocol,
    pose: Pose,
    z_center: float,
    rng: np.random.Generator,
) -> RenderedSeries:
    """Render an axial CT volume in HU plus one binary mask per nodule.

    Parameters
    ----------
    anatomy, nodules, diameters
        The patient's body, nodules and the nodule diameters at this study's date.
    protocol
        Series settings (slice thickness/spacing, pixel spacing, kernel, contrast, vendor).
    pose
        Table shift from body to patient coordinates.
    z_center
        Patient z (mm) of the middle of the volume.
    rng
        Study-level random generator (texture and noise).

    Returns
    -------
    RenderedSeries
        HU volume with partial-volume effects (each slice averages sub-slices across its
        thickness), vendor intensity shift and noise; masks are the voxels whose centre
        lies inside the nodule surface (holes filled per slice).
    """
    vendor = VENDORS[protocol.vendor]
    ps = protocol.pixel_spacing
    n = protocol.n_slices
    z = z_center + (np.arange(n) - (n - 1) / 2.0) * protocol.spacing
    origin = (-(MATRIX - 1) / 2.0 * ps, -(MATRIX - 1) / 2.0 * ps)
    xs = origin[0] + np.arange(MATRIX) * ps
    ys = origin[1] + np.arange(MATRIX) * ps
    m = 1 if protocol.thickness <= 1.5 else 3
    offsets = ((np.arange(m) + 0.5) / m - 0.5) * protocol.thickness
    zs = (z[:, None] + offsets[None, :]).reshape(-1)  # sub-slice positions, slice-major

    bx = (xs - pose.dx)[None, None, :]
    by = (ys - pose.dy)[None, :, None]
    bz = (zs - pose.dz)[:, None, None]
    hu = _anatomy_hu(anatomy, bx, by, bz, protocol.contrast)
    lung_mask = hu <= -700.0
    # Parenchymal texture (a few mm correlation length).
    texture = _smooth_noise(rng, hu.shape, (1.5 / protocol.thickness * m, 1.5 / ps, 1.5 / ps))
    hu = hu + np.where(lung_mask, 28.0 * texture, 0.0).astype(np.float32)

    result = RenderedSeries(hu=hu, z=z, origin_xy=origin, pixel_spacing=ps)
    grid = _SampleGrid(xs=xs, ys=ys, zs=zs, z=z, sub_slices=m)
    for nodule, diameter in zip(nodules, diameters, strict=True):
        center = np.array(nodule.center) + np.array([pose.dx, pose.dy, pose.dz])
        mask = _render_nodule(result.hu, grid, nodule, diameter, center, protocol, rng)
        result.masks.append(mask)
        result.diameters.append(diameter)
        result.centers_mm.append((float(center[0]), float(center[1]), float(center[2])))

    # Average sub-slices across the slice thickness (partial volume along z).
    hu_slices = result.hu.reshape(n, m, MATRIX, MATRIX).mean(axis=1)
    hu_slices = hu_slices * (1.0 + vendor.hu_gain) + vendor.hu_shift
    if protocol.hu_shift or protocol.hu_gain:  # the development site writes the bytes it always wrote
        hu_slices = hu_slices * (1.0 + protocol.hu_gain) + protocol.hu_shift
    sd = vendor.noise_sd * np.sqrt(2.5 / protocol.thickness) * (2.0 if protocol.lung_kernel else 1.0)
    sd *= float(protocol.tube_current) ** -0.5 * np.sqrt(150.0)
    noise = _smooth_noise(rng, hu_slices.shape, (0.0, vendor.noise_smooth, vendor.noise_smooth))
    result.hu = (hu_slices + sd * noise).astype(np.float32)
    return result


def to_stored(hu: np.ndarray, protocol: Protocol, pixel_spacing: float) -> np.ndarray:
    """Stored pixel values for the vendor's rescale and pixel representation.

    GE scanners also mark the corners outside the circular reconstruction field with
    (0028,0120) Pixel Padding Value -2000 (HU -3024).
    """
    vendor = VENDORS[protocol.vendor]
    stored = np.rint(hu - vendor.rescale_intercept)
    if vendor.signed:
        lo, hi = (-2000, 2**15 - 1) if vendor.key == "ge" else (-1024, 2**15 - 1)
        stored = np.clip(stored, lo + 1, hi)
        if vendor.key == "ge":
            c = (MATRIX - 1) / 2.0
            yy, xx = np.mgrid[0:MATRIX, 0:MATRIX]
            outside = (yy - c) ** 2 + (xx - c) ** 2 > (MATRIX / 2.0) ** 2
            stored[:, outside] = -2000
        return stored.astype(np.int16)
    return np.clip(stored, 0, 2**vendor.bits_stored - 1).astype(np.uint16)


def render_localizer(
    anatomy: Anatomy, pose: Pose, z_center: float, contrast: bool
) -> tuple[np.ndarray, tuple[float, float, float], float]:
    """A coronal projection radiograph (scout) around ``z_center``.

    Returns
    -------
    tuple
        ``(pixels uint16 [rows, cols], top-left position (x, y, z) mm, pixel spacing mm)``;
        rows run from head to feet, columns from the patient's right to left.
    """
    size, ps = 96, 1.5
    xs = -(size - 1) / 2.0 * ps + np.arange(size) * ps
    zs = z_center + (size - 1) / 2.0 * ps - np.arange(size) * ps
    ys = np.linspace(-anatomy.body_b * 1.1, anatomy.body_b * 1.1, 48)
    hu = _anatomy_hu(
        anatomy,
        (xs - pose.dx)[None, None, :],
        (ys - pose.dy)[None, :, None],
        (zs - pose.dz)[:, None, None],
        contrast,
        with_vessels=False,
    )
    mu = np.clip((hu + 1000.0) / 1000.0, 0.0, None).sum(axis=1) * (ys[1] - ys[0])
    image = np.clip(mu / max(float(mu.max()), 1e-6) * 3000.0 + 50.0, 0, 4095).astype(np.uint16)
    return image, (float(xs[0]), 0.0, float(zs[0])), ps
