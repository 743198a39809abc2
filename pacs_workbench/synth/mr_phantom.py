"""Synthetic brain MR volumes: a layered head, a tumour with oedema, and the physics of each sequence.

The head is an ellipsoid of scalp, skull, cerebrospinal fluid, cortex, white matter and two
ventricles (wider with age), 64 x 64 pixels of about 3.3 mm, axial slices of 4-5 mm with a
gap. Every voxel carries tissue parameters (proton density, T1 at the study's field strength,
T2, apparent diffusion coefficient, gadolinium concentration) and each sequence turns them into
signal with its textbook equation:

- spin echo: ``PD (1 - exp(-TR/T1)) exp(-TE/T2)``;
- inversion recovery (FLAIR): ``PD |1 - 2 exp(-TI/T1) + exp(-TR/T1)| exp(-TE/T2)``;
- IR-prepared gradient echo (MPRAGE, BRAVO, 3D TFE): the signed inversion term, clipped at 0;
- diffusion trace: the spin-echo signal times ``exp(-b ADC)`` with fat suppressed; the ADC map is
  the ADC itself (1e-6 mm^2/s), which no coil shading touches.

The tumour is star-shaped like the CT nodules (:func:`pacs_workbench.synth.imaging.radius_field`:
irregular margins have more energy in high angular frequencies), with an internal texture whose
contrast grows with its heterogeneity, a necrotic core in large heterogeneous tumours, gadolinium
uptake in its solid part (ring enhancement around the core) and surrounding vasogenic oedema.
Magnitude images get Rician noise and the receive coil's smooth multiplicative bias field
(stronger for coils with many small elements; 3 T adds central brightening).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from pacs_workbench.synth.imaging import NoduleSpec, _smooth_noise, radius_field
from pacs_workbench.synth.mr_sequences import COIL_BIAS, NOISE_15T, VENDOR_SCALE, MRScanner, SequenceSpec

#: In-plane matrix of every MR image.
MR_MATRIX = 64

# name: (proton density, T1 at 1.5 T ms, T1 at 3 T ms, T2 ms, ADC 1e-6 mm^2/s)
TISSUES: dict[str, tuple[float, float, float, float, float]] = {
    "air": (0.0, 1000.0, 1000.0, 10.0, 0.0),
    "scalp": (0.90, 270.0, 390.0, 80.0, 150.0),
    "bone": (0.06, 300.0, 320.0, 5.0, 200.0),
    "csf": (1.00, 4000.0, 4300.0, 1800.0, 3000.0),
    "gm": (0.82, 1100.0, 1550.0, 95.0, 850.0),
    "wm": (0.70, 750.0, 1000.0, 75.0, 730.0),
    "tumour": (0.86, 1300.0, 1750.0, 120.0, 950.0),
    "oedema": (0.90, 1250.0, 1650.0, 150.0, 1450.0),
    "necrosis": (0.96, 2400.0, 3000.0, 320.0, 2300.0),
}
_LAYERS = (("scalp", 1.0), ("bone", 0.935), ("csf", 0.875), ("gm", 0.85), ("wm", 0.74))
# Relaxivity of a gadolinium agent (1/s per mmol/l).
_R1 = {1.5: 4.5, 3.0: 4.0}


@dataclass(frozen=True)
class HeadAnatomy:
    """A patient's head (semi-axes in mm along x, y, z) and ventricle size, fixed across studies."""

    a: float
    b: float
    c: float
    ventricles: float


@dataclass(frozen=True)
class MRGeometry:
    """Where a study's axial slices lie: in-plane pixel spacing, thickness, spacing and count."""

    pixel_spacing: float
    thickness: float
    spacing: float
    n_slices: int
    z_center: float
    descending: bool


@dataclass
class RenderedStudy:
    """Tissue parameters of one study on its sub-slice grid, and what every series needs.

    Arrays are ``[k, row, column]`` along increasing z; ``z`` holds slice positions (mm) and
    ``origin_xy`` the patient x and y of pixel (0, 0).
    """

    params: dict[str, np.ndarray]
    z: np.ndarray
    origin_xy: tuple[float, float]
    geometry: MRGeometry
    sub_slices: int
    head: np.ndarray  # inside the scalp, per sub-voxel
    brain: np.ndarray  # inside the skull (fluid, grey and white matter), per sub-voxel
    bias: np.ndarray  # coil sensitivity per slice voxel
    mask: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    center_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)


def plan_head(rng: np.random.Generator, age: int) -> HeadAnatomy:
    """Head size and ventricle width (older brains have wider ventricles)."""
    a = float(rng.uniform(68.0, 76.0))
    return HeadAnatomy(a=a, b=a * float(rng.uniform(1.18, 1.28)), c=float(rng.uniform(72.0, 80.0)),
                       ventricles=float(np.clip(0.8 + 0.012 * (age - 50) + rng.normal(0, 0.08), 0.7, 1.5)))


def plan_geometry(rng: np.random.Generator, head: HeadAnatomy, scanner: MRScanner, z_mid: float) -> MRGeometry:
    """The slice stack: about 130 mm of head, 4-5 mm slices with a 0.5-1 mm gap (3 T: thinner)."""
    thickness = float(rng.choice([4.0, 5.0])) if scanner.field_t >= 3.0 else 5.0
    spacing = thickness + float(rng.choice([0.5, 1.0]))
    fov = 2.0 * head.b + float(rng.uniform(14.0, 30.0))
    return MRGeometry(
        pixel_spacing=round(fov / MR_MATRIX, 6),
        thickness=thickness,
        spacing=spacing,
        n_slices=int(np.clip(round(130.0 / spacing), 18, 30)),
        z_center=z_mid,
        descending=scanner.vendor in ("ge", "canon"),
    )


def brain_region(center: tuple[float, float, float]) -> str:
    """Lobe of a head-coordinate position (x < 0 is the patient's right, y < 0 anterior)."""
    x, y, z = center
    side = "right" if x < 0 else "left"
    if z < -12.0 and y < 25.0:
        lobe = "temporal"
    elif y < -15.0:
        lobe = "frontal"
    elif y > 40.0:
        lobe = "occipital"
    else:
        lobe = "parietal"
    return f"{side} {lobe} lobe"


def place_lesion(head: HeadAnatomy, rng: np.random.Generator, diameter: float) -> tuple[float, float, float]:
    """A lesion centre in the cerebral white matter, clear of the ventricles and the cortex."""
    for _ in range(200):
        u = rng.uniform(-1.0, 1.0, size=3)
        if float(u @ u) > 1.0:
            continue
        r = 0.62 - diameter / (2.0 * min(head.a, head.b))
        point = (float(u[0] * head.a * r), float(u[1] * head.b * r), float(0.15 * head.c + u[2] * head.c * r * 0.6))
        if abs(point[0]) > 14.0 + diameter / 2.0 or abs(point[1]) > 30.0:
            return point
    return (float(np.sign(rng.normal()) * 0.35 * head.a), float(-0.3 * head.b), 0.2 * head.c)


def _base_tissue(head: HeadAnatomy, bx: np.ndarray, by: np.ndarray, bz: np.ndarray) -> np.ndarray:
    """Tissue index (into :data:`TISSUES`) of each point, from the outermost layer inwards."""
    names = list(TISSUES)
    shape = np.broadcast_shapes(bx.shape, by.shape, bz.shape)
    e = np.sqrt((bx / head.a) ** 2 + (by / head.b) ** 2 + (bz / head.c) ** 2)
    label = np.zeros(shape, dtype=np.int8)
    for name, radius in _LAYERS:
        label[np.broadcast_to(e <= radius, shape)] = names.index(name)
    v = head.ventricles
    for side in (-1.0, 1.0):
        vent = ((bx - side * 7.0 * v) / (5.5 * v)) ** 2 + ((by + 2.0) / 22.0) ** 2 + ((bz - 10.0) / (11.0 * v)) ** 2
        label[np.broadcast_to(vent <= 1.0, shape)] = names.index("csf")
    return label


def _parameters(label: np.ndarray, field_t: float) -> dict[str, np.ndarray]:
    table = np.array([(pd, t1_15 if field_t < 2.0 else t1_3, t2, adc) for pd, t1_15, t1_3, t2, adc in
                      TISSUES.values()], dtype=np.float32)  # fmt: skip
    values = table[label]
    return {
        "pd": values[..., 0], "t1": values[..., 1], "t2": values[..., 2], "adc": values[..., 3],
        "gd": np.zeros(label.shape, dtype=np.float32), "fat": (label == list(TISSUES).index("scalp")),
    }  # fmt: skip


def _blend(params: dict[str, np.ndarray], where: tuple[slice, ...], alpha: np.ndarray,
           values: dict[str, np.ndarray | float]) -> None:
    """Mix tissue parameters into a block: ``(1 - alpha) * old + alpha * new`` (T1/T2 in log space)."""
    for name, value in values.items():
        old = params[name][where]
        if name in ("t1", "t2"):
            mixed = np.exp((1.0 - alpha) * np.log(old) + alpha * np.log(value))
        else:
            mixed = (1.0 - alpha) * old + alpha * value
        params[name][where] = mixed.astype(np.float32)
    params["fat"][where] &= alpha < 0.5


def _render_lesion(study: RenderedStudy, lesion: NoduleSpec, diameter: float, center: np.ndarray,
                   grid: tuple[np.ndarray, np.ndarray, np.ndarray], field_t: float,
                   rng: np.random.Generator) -> np.ndarray:
    """Blend tumour, necrosis, enhancement and oedema into the parameters; the tumour mask per slice."""
    xs, ys, zs = grid
    g = study.geometry
    ps, m = g.pixel_spacing, study.sub_slices
    reach = diameter / 2.0 * 1.9 * (1.6 + 0.8 * lesion.irregularity) + 2.0 * ps
    ix = np.nonzero(np.abs(xs - center[0]) <= reach)[0]
    iy = np.nonzero(np.abs(ys - center[1]) <= reach)[0]
    iz = np.nonzero(np.abs(zs - center[2]) <= reach + g.thickness)[0]
    mask = np.zeros((g.n_slices, MR_MATRIX, MR_MATRIX), dtype=bool)
    if ix.size and iy.size and iz.size:
        where = (slice(iz[0], iz[-1] + 1), slice(iy[0], iy[-1] + 1), slice(ix[0], ix[-1] + 1))
        vec = np.stack(np.broadcast_arrays((xs[where[2]] - center[0])[None, None, :],
                                           (ys[where[1]] - center[1])[None, :, None],
                                           (zs[where[0]] - center[2])[:, None, None]), axis=-1)  # fmt: skip
        dist = np.linalg.norm(vec, axis=-1)
        surface = radius_field(lesion, diameter, vec / np.maximum(dist, 1e-6)[..., None])
        brain = study.brain[where]  # scalp fat and skull keep their own signal
        oedema_edge = surface * (1.5 + 0.9 * lesion.irregularity)
        oedema = brain / (1.0 + np.exp(-(oedema_edge - dist) / (1.2 * ps)))
        _blend(study.params, where, oedema.astype(np.float32), {k: v for k, v in zip(
            ("pd", "t1", "t2", "adc"), _tissue("oedema", field_t), strict=True)})  # fmt: skip
        alpha = (1.0 / (1.0 + np.exp(-(surface - dist) / (0.3 * ps)))).astype(np.float32)
        sigma = (2.0 / g.thickness * m, 2.0 / ps, 2.0 / ps)
        texture = _smooth_noise(rng, dist.shape, sigma)
        uptake = _smooth_noise(rng, dist.shape, sigma)
        pd, t1, t2, adc = _tissue("tumour", field_t)
        het = lesion.heterogeneity
        values: dict[str, np.ndarray | float] = {
            "pd": pd * (1.0 + 0.05 * het * texture), "t1": t1 * np.exp(0.22 * het * texture),
            "t2": t2 * np.exp(0.35 * het * texture), "adc": adc * np.exp(0.25 * het * texture),
        }  # fmt: skip
        _blend(study.params, where, alpha, values)
        core = np.zeros(dist.shape, dtype=np.float32)
        if het > 0.5 and diameter > 16.0:
            core = np.clip(1.0 - dist / (0.5 * surface * (0.5 + het)), 0.0, 1.0).astype(np.float32) * alpha
            _blend(study.params, where, core, dict(zip(("pd", "t1", "t2", "adc"), _tissue("necrosis", field_t),
                                                       strict=True)))  # fmt: skip
        gd = 0.25 * np.clip(1.0 + (0.3 + 0.7 * het) * uptake, 0.0, None) * alpha * (1.0 - core)
        study.params["gd"][where] = np.maximum(study.params["gd"][where], gd.astype(np.float32))
        inside = dist <= surface
        k_sub = np.arange(iz[0], iz[-1] + 1)
        centre_rows = (k_sub % m) == m // 2
        ks = k_sub[centre_rows] // m
        mask[ks[:, None, None], iy[None, :, None], ix[None, None, :]] = inside[centre_rows]
    for k in range(g.n_slices):
        if mask[k].any():
            mask[k] = ndimage.binary_fill_holes(mask[k])
    return mask


def _tissue(name: str, field_t: float) -> tuple[float, float, float, float]:
    pd, t1_15, t1_3, t2, adc = TISSUES[name]
    return pd, (t1_15 if field_t < 2.0 else t1_3), t2, adc


def _bias_field(head: HeadAnatomy, scanner: MRScanner, bx: np.ndarray, by: np.ndarray, bz: np.ndarray,
                rng: np.random.Generator) -> np.ndarray:
    """The coil's smooth multiplicative sensitivity (mean about 1 over the head)."""
    r2 = (bx / head.a) ** 2 + (by / head.b) ** 2 + (bz / head.c) ** 2
    log_bias = COIL_BIAS.get(scanner.coil, 0.3) * (r2 - 0.45)
    if scanner.field_t >= 3.0:  # standing-wave brightening of the centre at 3 T
        log_bias = log_bias + 0.22 * np.exp(-r2 / 0.3)
    tilt = rng.normal(0.0, 0.08, size=3)
    log_bias = log_bias + tilt[0] * bx / head.a + tilt[1] * by / head.b + tilt[2] * bz / head.c
    return np.exp(log_bias).astype(np.float32)


def render_study(head: HeadAnatomy, lesion: NoduleSpec, diameter: float, geometry: MRGeometry,
                 scanner: MRScanner, pose: tuple[float, float, float], rng: np.random.Generator) -> RenderedStudy:
    """Tissue parameters of one study (with the lesion at ``diameter``), its coil bias and lesion mask."""
    g = geometry
    ps = g.pixel_spacing
    z = g.z_center + (np.arange(g.n_slices) - (g.n_slices - 1) / 2.0) * g.spacing
    origin = (-(MR_MATRIX - 1) / 2.0 * ps, -(MR_MATRIX - 1) / 2.0 * ps)
    xs = origin[0] + np.arange(MR_MATRIX) * ps
    ys = origin[1] + np.arange(MR_MATRIX) * ps
    m = 3
    offsets = ((np.arange(m) + 0.5) / m - 0.5) * g.thickness
    zs = (z[:, None] + offsets[None, :]).reshape(-1)
    bx, by = (xs - pose[0])[None, None, :], (ys - pose[1])[None, :, None]
    label = _base_tissue(head, bx, by, (zs - pose[2])[:, None, None])
    study = RenderedStudy(
        params=_parameters(label, scanner.field_t), z=z, origin_xy=origin, geometry=g, sub_slices=m,
        head=label > 0, brain=label >= list(TISSUES).index("csf"),
        bias=_bias_field(head, scanner, bx, by, (z - pose[2])[:, None, None], rng),
    )  # fmt: skip
    center = np.array(lesion.center) + np.array(pose)
    study.mask = _render_lesion(study, lesion, diameter, center, (xs, ys, zs), scanner.field_t, rng)
    study.center_mm = (float(center[0]), float(center[1]), float(center[2]))
    return study


def _signal(study: RenderedStudy, spec: SequenceSpec, field_t: float) -> np.ndarray:
    """Noiseless magnitude signal of a sequence on the sub-slice grid."""
    p = study.params
    t1 = 1.0 / (1.0 / p["t1"] + (_R1[3.0 if field_t >= 3.0 else 1.5] * p["gd"] / 1000.0 if spec.contrast else 0.0))
    te, tr = spec.echo_time, spec.render_tr
    decay = np.exp(-te / p["t2"])
    if spec.weighting == "ir":
        ti = float(spec.inversion_time or 0.0)
        signal = p["pd"] * np.abs(1.0 - 2.0 * np.exp(-ti / t1) + np.exp(-tr / t1)) * decay
    elif spec.weighting == "mprage":
        ti = 900.0  # the effective inversion delay of the preparation, however the vendor reports TI
        signal = p["pd"] * np.clip(1.0 - 2.0 * np.exp(-ti / t1) + np.exp(-tr / t1), 0.0, None) + 0.02 * p["pd"]
    else:
        signal = p["pd"] * (1.0 - np.exp(-tr / t1)) * decay
        if spec.weighting == "dwi":
            signal = np.where(p["fat"], 0.0, signal * np.exp(-1000.0 * p["adc"] * 1e-6))
    return signal.astype(np.float32)


def render_series(study: RenderedStudy, spec: SequenceSpec, scanner: MRScanner,
                  rng: np.random.Generator) -> np.ndarray:
    """Stored pixel values (uint16, ``[k, row, column]`` along increasing z) of one series."""
    g = study.geometry
    m = study.sub_slices
    bits, top = VENDOR_SCALE[scanner.vendor]
    shape = (g.n_slices, m, MR_MATRIX, MR_MATRIX)
    if spec.weighting == "adc":
        adc = np.where(study.head, study.params["adc"], 0.0).reshape(shape).mean(axis=1)
        noise = rng.normal(0.0, 45.0, size=adc.shape) * (adc > 0)
        return np.clip(np.rint(adc + noise), 0, 2**bits - 1).astype(np.uint16)
    signal = _signal(study, spec, scanner.field_t).reshape(shape).mean(axis=1) * study.bias
    inside = study.head.reshape(shape).any(axis=1)
    reference = float(np.percentile(signal[inside], 99.5)) if inside.any() else 1.0
    scaled = signal / max(reference, 1e-6) * top
    sd = NOISE_15T * top * (0.5 if scanner.field_t >= 3.0 else 1.0) * (1.8 if spec.weighting == "dwi" else 1.0)
    real = scaled + rng.normal(0.0, sd, size=scaled.shape)
    imaginary = rng.normal(0.0, sd, size=scaled.shape)
    magnitude = np.sqrt(real**2 + imaginary**2)  # Rician noise of a magnitude image
    return np.clip(np.rint(magnitude), 0, 2**bits - 1).astype(np.uint16)
