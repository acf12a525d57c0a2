"""Fingerprint signal: how much of the clean capture's ridge pattern each degradation leaves in the pixels.

``checkpoint-bench fingerprint-ceiling`` traces degraded images along the clean image's fields and still
misses the robustness target in some cells; this measures whether the degraded pixels still hold the clean
ridges there, with no extractor in the loop. For every FVC2002 B set and every degradation that keeps the
image's pixel grid (``contrast``, ``blur``, ``dry``, ``wet``; ``texture`` too, its padding cropped off), inside
the clean image's foreground mask (``measure_fields``, eroded by half a ridge period):

- ridge survival: the share of the clean image's ridge skeleton (the shipped pipeline's thinned ridges) whose
  pixels are still dark in the degraded image, "dark" meaning more than ``TOLERANCE`` grey levels under the
  mean over a box of one ridge period (the clean image's median period); valleys lost: the share of the clean
  valley skeleton (the thinned complement of the ridges) no longer more than ``TOLERANCE`` over that mean
  (merged into a ridge, or flattened). Both per pixel and once the degraded image is averaged along the
  clean ridge flow over one period (what an oriented filter with the clean orientation sees: it bridges a
  break shorter than about half a period), everywhere and inside ``dry``'s breaks and ``wet``'s merged
  patches (``degrade.patches``). The clean image itself gives the baseline (its own pores and noise);
- band SNR: the clean and the degraded image, each locally normalised as the extractor does, windowed by
  the mask, in the ridge band (``sharpness.RIDGE_BAND`` times the clean ridge frequency): the share of the
  degraded band's power that the clean one predicts with one real gain per radial ring (so a blur, or a
  contrast change, costs nothing but what rounding to grey levels adds), over the share it does not, in dB;
- ridge and valley widths of the clean images, in the pixels the degradation acted on (the raw capture's;
  DB2_B is 569 dpi), measured along the normal to the ridge flow at each skeleton point: the full width at
  half depth (FWHM) of the dark (bright) stroke through it, n px for a binary stroke of n pixels. On binary
  strokes ``dry``'s 3x3 grey dilation erases a ridge under ``ERASE`` px (along an axis; a little more
  diagonally) and ``wet`` closes a valley under 3 px (3x3 erosion), in its merged patches under ``MERGE`` px
  (5x5 elliptic erosion). A grey ridge with soft flanks keeps a darker core after the dilation even under
  3 px FWHM: the survival above is the direct measure, the widths say why.

With ``--ceiling`` (the JSON of ``fingerprint-ceiling``) the table shows each cell's EER ratio to the clean
EER, shipped and with the clean fields, beside the signal figures. 44-72 s a set with 2 workers on the 2 shared
cores at load average 13-15 (take ``flock -x /tmp/checkpoint-bench.lock``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage

from benchmarks.degrade import PATCHES, TEXTURE_PAD, degrade, patches, seed_for
from benchmarks.fingerprint_ceiling import SAME_GEOMETRY, add_set_arguments
from benchmarks.fingerprint_eval import SENSOR_DPI

COMMAND = "fingerprint-signal"
KINDS = (*SAME_GEOMETRY, "texture")
TOLERANCE = 0.5  # grey levels under the local mean for a pixel to count as dark (flat areas are not ridge)
STEP = 0.25  # px between samples of a width profile
ERASE = 3.0  # px: a 3x3 grey dilation erases an axis-aligned ridge narrower than this
MERGE = 5.0  # px: the 5x5 elliptic erosion of wet's patches closes valleys narrower than this


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options."""
    add_set_arguments(parser, KINDS)
    parser.add_argument("--ceiling", type=Path, help="fingerprint-ceiling's JSON, to show its ratios beside")


@dataclass(frozen=True)
class RidgeMap:
    """The clean capture's ridge pattern as the shipped pipeline traces it, inside its (eroded) mask."""

    mask: np.ndarray
    skeleton: np.ndarray  # ridge centre lines
    valleys: np.ndarray  # valley centre lines
    flow: np.ndarray  # ridge direction, radians in [0, pi)
    period: float  # median ridge period, px
    local: np.ndarray  # the locally normalised image


def ridge_map(image: np.ndarray) -> RidgeMap:
    """Trace a working-resolution clean image with the shipped pipeline and keep what the measures need."""
    from biometrics.fingerprint.pipeline import measure_fields, trace_ridges
    from biometrics.fingerprint.skeleton import thin

    fields = measure_fields(image)
    traced = trace_ridges(fields.local, fields)
    margin = max(1, round(fields.period / 2))
    mask = ndimage.binary_erosion(fields.mask, iterations=margin)
    valleys = thin(~traced.ridges & fields.mask)
    return RidgeMap(mask, traced.skeleton & mask, valleys & mask, fields.flow, fields.period, fields.local)


def _box(period: float) -> int:
    """Odd side of a box of about one ridge period."""
    return max(3, 2 * round(period / 2) + 1)


def local_mean(image: np.ndarray, period: float) -> np.ndarray:
    """Mean over a box of one ridge period about each pixel."""
    side = _box(period)
    return cv2.blur(image.astype(np.float32), (side, side), borderType=cv2.BORDER_REFLECT)


def dark(image: np.ndarray, period: float) -> np.ndarray:
    """Pixels more than ``TOLERANCE`` grey levels under the local mean: ridge pixels."""
    return image.astype(np.float32) < local_mean(image, period) - TOLERANCE


def bright(image: np.ndarray, period: float) -> np.ndarray:
    """Pixels more than ``TOLERANCE`` grey levels over the local mean: valley pixels."""
    return image.astype(np.float32) > local_mean(image, period) + TOLERANCE


def _kept_points(image: np.ndarray, points: np.ndarray, flow: np.ndarray, period: float, ridge: bool = True
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(whether each of ``points`` is still dark (``ridge``) or bright in ``image``; whether it is once
    ``image`` is averaged along the ridge flow over one period, as an oriented filter with the clean
    orientation would see it)."""
    pixel = (dark if ridge else bright)(image, period)[points[:, 0], points[:, 1]]
    mean = local_mean(image, period)[points[:, 0], points[:, 1]]
    half = max(1, round(period / 2))
    _, samples = _profiles(image, points, flow, np.arange(-half, half + 1.0), across=False)
    along = samples.mean(axis=1)
    return pixel, (along < mean - TOLERANCE) if ridge else (along > mean + TOLERANCE)


def survival(ridges: RidgeMap, image: np.ndarray, region: np.ndarray | None = None) -> dict[str, int]:
    """Counts on ``image`` (any capture on the clean one's grid): ridge-skeleton points still dark
    (``ridge_kept``), valley-skeleton points no longer bright (``valley_lost``: merged into a ridge or
    flattened), each per pixel and averaged along the ridge (``_along``), and the totals; with ``region``,
    the same counts inside it too (``_in``)."""
    counts: dict[str, int] = {}
    for label, lines, ridge in (("ridge", ridges.skeleton, True), ("valley", ridges.valleys, False)):
        points = np.argwhere(lines)
        pixel, along = _kept_points(image.astype(np.float32), points, ridges.flow, ridges.period, ridge)
        if not ridge:
            pixel, along = ~pixel, ~along
        tally = "kept" if ridge else "lost"
        parts = [("", np.ones(len(points), bool))]
        if region is not None:
            parts.append(("_in", region[points[:, 0], points[:, 1]]))
        for suffix, chosen in parts:
            counts[f"{label}_total{suffix}"] = int(chosen.sum())
            counts[f"{label}_{tally}{suffix}"] = int(pixel[chosen].sum())
            counts[f"{label}_{tally}_along{suffix}"] = int(along[chosen].sum())
    return counts


def patch_region(shape: tuple[int, int], kind: str, seed: int, working: tuple[int, int]) -> np.ndarray | None:
    """Where ``dry`` breaks or ``wet`` merges (``degrade.patches``), on the working image's grid; None for the
    other degradations."""
    if kind not in PATCHES:
        return None
    region = patches(shape, kind, seed).astype(np.uint8)
    if region.shape != working:
        region = cv2.resize(region, (working[1], working[0]), interpolation=cv2.INTER_NEAREST)
    return region.astype(bool)


RINGS = 7  # radial rings across the ridge band, each with its own real gain


def band_explained(clean_local: np.ndarray, degraded_local: np.ndarray, mask: np.ndarray, period: float) -> float:
    """Share of the degraded image's ridge-band power that the clean image predicts, given one real gain per
    radial ring of the band (``RINGS`` rings over ``sharpness.RIDGE_BAND`` times 1 / ``period``): 1 when the
    degraded band is any isotropic zero-phase filter of the clean one (a blur), less for what no such filter
    gives (breaks, merges, noise). Both images windowed by the mask, smoothed over half a period."""
    from biometrics.fingerprint.sharpness import RIDGE_BAND

    window = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), period / 2.0)
    a = np.fft.rfft2(clean_local.astype(np.float64) * window)
    b = np.fft.rfft2(degraded_local.astype(np.float64) * window)
    radial = np.hypot(np.fft.rfftfreq(mask.shape[1])[None, :], np.fft.fftfreq(mask.shape[0])[:, None]) * period
    ring = np.digitize(radial, np.linspace(RIDGE_BAND[0], RIDGE_BAND[1], RINGS + 1))
    explained = total = 0.0
    for r in range(1, RINGS + 1):
        sel = ring == r
        power_a = float((np.abs(a[sel]) ** 2).sum())
        cross = float(np.real(a[sel] * np.conj(b[sel])).sum())
        explained += cross * cross / power_a if power_a > 0 else 0.0
        total += float((np.abs(b[sel]) ** 2).sum())
    return explained / total if total > 0 else 0.0


def snr_db(explained: float) -> float:
    """explained / (1 - explained) in dB: the clean pattern's power over the rest, in the ridge band."""
    share = min(max(explained, 1e-12), 1.0 - 1e-9)
    return float(10.0 * np.log10(share / (1.0 - share)))


def _runs(inside: np.ndarray, excess: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Length in samples of the run of ``inside`` samples through each profile's ``start`` sample, its ends
    interpolated on ``excess`` (negative inside); NaN where it reaches a profile's end."""
    count, size = inside.shape
    index = np.arange(size)
    last_out = np.maximum.accumulate(np.where(~inside, index, -1), axis=1)
    first_out = np.minimum.accumulate(np.where(~inside, index, size)[:, ::-1], axis=1)[:, ::-1]
    rows = np.arange(count)
    lo, hi = last_out[rows, start], first_out[rows, start]
    ok = (lo >= 0) & (hi < size)
    lo, hi = np.where(ok, lo, 0), np.where(ok, hi, 1)
    a, b = excess[rows, lo], excess[rows, lo + 1]
    left = lo + a / np.where(a != b, a - b, 1.0)
    c, d = excess[rows, hi - 1], excess[rows, hi]
    right = hi - 1 - c / np.where(c != d, d - c, 1.0)
    return np.where(ok, right - left, np.nan)


def _profiles(image: np.ndarray, points: np.ndarray, flow: np.ndarray, offsets: np.ndarray, across: bool = True
              ) -> tuple[np.ndarray, np.ndarray]:
    """(``offsets``, px; ``image`` sampled at them from each of ``points`` ((N, 2) as y, x), across the ridge
    flow or along it: one row per point)."""
    ys, xs = points[:, 0].astype(np.float64), points[:, 1].astype(np.float64)
    t = flow[points[:, 0], points[:, 1]].astype(np.float64)
    dx, dy = (-np.sin(t), np.cos(t)) if across else (np.cos(t), np.sin(t))
    coords = [(ys[:, None] + offsets * dy[:, None]).ravel(), (xs[:, None] + offsets * dx[:, None]).ravel()]
    samples = ndimage.map_coordinates(image.astype(np.float32), coords, order=1, mode="reflect")
    return offsets, samples.reshape(len(points), len(offsets))


def widths(image: np.ndarray, points: np.ndarray, flow: np.ndarray, period: float, ridge: bool = True
           ) -> np.ndarray:
    """Full width at half depth, px, along the normal to ``flow``, of the dark (``ridge``) or bright stroke
    through each of ``points`` ((N, 2) as y, x): the stroke's extreme within a quarter period of the point,
    the level halfway from it to the lower of the two opposite extremes within a period on either side (for
    a binary stroke of n pixels, n px). NaN where the stroke is under ``2 * TOLERANCE`` grey levels deep."""
    if len(points) == 0:
        return np.zeros(0)
    offsets = np.arange(-period, period + STEP / 2, STEP)
    u, samples = _profiles(image, points, flow, offsets - offsets[len(offsets) // 2])
    dip = samples if ridge else -samples
    index = np.arange(len(u))
    centre = np.argmin(np.where(np.abs(u) <= period / 4, dip, np.inf), axis=1)
    bottom = dip[np.arange(len(points)), centre]
    before = np.max(np.where(index[None, :] < centre[:, None], dip, -np.inf), axis=1)
    after = np.max(np.where(index[None, :] > centre[:, None], dip, -np.inf), axis=1)
    rim = np.minimum(before, after)
    excess = dip - ((bottom + rim) / 2)[:, None]
    run = STEP * _runs(excess < 0, excess, centre)
    return np.where(rim - bottom > 2 * TOLERANCE, run, np.nan)


def aligned(grey: np.ndarray, kind: str, seed: int) -> np.ndarray:
    """The ``kind`` degradation of ``grey`` on the clean capture's pixel grid (``texture``'s padding cut)."""
    out = degrade(grey, kind, seed)
    if kind == "texture":
        out = out[TEXTURE_PAD:-TEXTURE_PAD, TEXTURE_PAD:-TEXTURE_PAD]
    if out.shape != grey.shape:
        raise ValueError(f"{kind} does not keep the pixel grid")
    return out


def _image_figures(job: tuple[str, str, int, tuple[str, ...]]) -> dict:
    """One capture's figures: survival counts and band correlation per degradation, clean widths."""
    from PIL import Image

    from biometrics.fingerprint.image import as_working_image, local_normalise, normalise

    path, set_name, dpi, kinds = job
    name = Path(path).name
    grey = np.array(Image.open(path).convert("L"))
    clean = as_working_image(grey, dpi)
    ridges = ridge_map(clean)
    scale = dpi / 500.0  # working px to the raw capture's px, where the degradations act
    out: dict = {"name": name, "period": ridges.period, "clean": survival(ridges, clean)}
    for label, lines, is_ridge in (("ridge", ridges.skeleton, True), ("valley", ridges.valleys, False)):
        points = np.argwhere(lines)
        out[f"{label}_width"] = (scale * widths(clean, points, ridges.flow, ridges.period, is_ridge)).tolist()
    for kind in kinds:
        seed = seed_for(set_name, name, kind)
        image = as_working_image(aligned(grey, kind, seed), dpi)
        figures = survival(ridges, image, patch_region(grey.shape, kind, seed, clean.shape))
        figures["explained"] = band_explained(ridges.local, local_normalise(normalise(image)), ridges.mask,
                                              ridges.period)
        out[kind] = figures
    return out


def _share(values: np.ndarray, limit: float) -> float:
    """Share of the measured (finite) values under ``limit``."""
    ok = values[np.isfinite(values)]
    return float((ok < limit).mean()) if ok.size else 0.0


def width_row(set_name: str, images: list[dict]) -> dict:
    """A set's clean ridge and valley widths (raw px): quantiles and shares under the structuring elements."""
    ridge = np.concatenate([np.asarray(i["ridge_width"], dtype=float) for i in images])
    valley = np.concatenate([np.asarray(i["valley_width"], dtype=float) for i in images])
    r, v = ridge[np.isfinite(ridge)], valley[np.isfinite(valley)]
    return {"set": set_name, "period": float(np.median([i["period"] for i in images])),
            "ridge_median": float(np.median(r)), "ridge_p10": float(np.percentile(r, 10)),
            "ridge_under_3": _share(ridge, ERASE),
            "ridge_unmeasured": float(1 - np.isfinite(ridge).mean()),
            "valley_median": float(np.median(v)), "valley_p10": float(np.percentile(v, 10)),
            "valley_under_3": _share(valley, ERASE), "valley_under_5": _share(valley, MERGE),
            "valley_unmeasured": float(1 - np.isfinite(valley).mean())}


def _pooled(counts: list[dict], part: str, whole: str, inside: bool | None = None) -> float:
    """``part`` over ``whole`` summed over images: everywhere (``inside`` None), inside the degradation's
    patches (True) or outside them (False). ``part`` is a count key (``ridge_kept_along``), ``whole`` its total."""
    def total(key: str) -> int:
        everywhere = sum(c[key] for c in counts)
        within = sum(c[f"{key}_in"] for c in counts) if inside is not None else 0
        return within if inside else everywhere - within

    return total(part) / max(total(whole), 1)


def signal_row(set_name: str, kind: str, images: list[dict]) -> dict:
    """A set's survival, merging and band SNR under one degradation (``clean``: the clean image itself), per
    pixel and along the ridge, everywhere and inside ``dry``'s breaks or ``wet``'s merged patches."""
    counts = [i[kind] for i in images]
    kept = np.array([c["ridge_kept"] / max(c["ridge_total"], 1) for c in counts])
    row = {"set": set_name, "degradation": kind, "survival_p10": float(np.percentile(kept, 10))}
    patched = bool(counts) and "ridge_total_in" in counts[0]
    for name, part, whole in (("survival", "ridge_kept", "ridge_total"), ("merged", "valley_lost", "valley_total")):
        for scale in ("", "_along"):
            row[name + scale] = _pooled(counts, part + scale, whole)
            if patched:
                row[f"{name}{scale}_in"] = _pooled(counts, part + scale, whole, True)
                row[f"{name}{scale}_out"] = _pooled(counts, part + scale, whole, False)
    if kind != "clean":
        snr = np.array([snr_db(c["explained"]) for c in counts])
        row.update({"snr_db": float(np.median(snr)), "snr_db_p10": float(np.percentile(snr, 10))})
    return row


def measure(data: Path, set_name: str, kinds: list[str], workers: int) -> tuple[dict, list[dict]]:
    """(the set's width row, its signal rows: clean first, then one per degradation)."""
    jobs = [(str(p), set_name, SENSOR_DPI[set_name], tuple(kinds)) for p in sorted((data / set_name).glob("*.png"))]
    with ProcessPoolExecutor(max(1, workers), mp_context=multiprocessing.get_context("spawn")) as pool:
        images = list(pool.map(_image_figures, jobs, chunksize=2))
    return width_row(set_name, images), [signal_row(set_name, k, images) for k in ("clean", *kinds)]


def ceiling_ratios(path: Path | None) -> dict[tuple[str, str], tuple[float, float]]:
    """{(set, degradation): (EER ratio shipped, with clean fields)} from fingerprint-ceiling's JSON."""
    if path is None:
        return {}
    rows = json.loads(path.read_text())["rows"]
    by = {(r["set"], r["degradation"], r["extraction"]): r["ratio"] for r in rows}
    return {(s, k): (by[s, k, "shipped"], by.get((s, k, "clean fields"), float("nan")))
            for s, k, e in by if e == "shipped"}


def width_table(rows: list[dict]) -> str:
    """One line per set: its clean ridge and valley widths against the 3x3 and 5x5 elements."""
    lines = ["| set | period px (500 dpi) | ridge FWHM median / p10 px | ridges < 3 px | valley FWHM median / p10 "
             "px | valleys < 3 px | valleys < 5 px | unmeasured ridge / valley points |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['set']} | {r['period']:.1f} | {r['ridge_median']:.2f} / {r['ridge_p10']:.2f} | "
                     f"{100 * r['ridge_under_3']:.1f}% | "
                     f"{r['valley_median']:.2f} / {r['valley_p10']:.2f} | {100 * r['valley_under_3']:.1f}% | "
                     f"{100 * r['valley_under_5']:.1f}% | {100 * r['ridge_unmeasured']:.1f}% / "
                     f"{100 * r['valley_unmeasured']:.1f}% |")
    return "\n".join(lines)


def _cell(row: dict, key: str) -> str:
    """``key`` in %, with its value inside the degradation's patches in brackets when it has them."""
    inside = f" ({100 * row[key + '_in']:.1f})" if key + "_in" in row else ""
    return f"{100 * row[key]:.1f}{inside}"


def signal_table(rows: list[dict], ratios: dict[tuple[str, str], tuple[float, float]]) -> str:
    """One line per set and degradation: survival and merging (per pixel, along the ridge), band SNR, and the
    EER ratios when given."""
    lines = ["| set | degradation | ridge kept % (in patches) | along ridge | valleys lost % (in patches) | "
             "along ridge | band SNR dB median (p10) | x clean EER shipped / clean fields |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        snr = f"{r['snr_db']:.1f} ({r['snr_db_p10']:.1f})" if "snr_db" in r else "-"
        ratio = ratios.get((r["set"], r["degradation"]))
        shown = f"{ratio[0]:.2f} / {ratio[1]:.2f}" if ratio else "-"
        cells = " | ".join(_cell(r, k) for k in ("survival", "survival_along", "merged", "merged_along"))
        lines.append(f"| {r['set']} | {r['degradation']} | {cells} | {snr} | {shown} |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Measure every set, print both tables, write the figures."""
    t0 = time.perf_counter()
    width_rows: list[dict] = []
    signal_rows: list[dict] = []
    for set_name in args.sets:
        w, s = measure(args.data, set_name, list(args.degradations), args.workers)
        width_rows.append(w)
        signal_rows += s
        print(f"<!-- {set_name}: {time.perf_counter() - t0:.0f} s -->", file=sys.stderr, flush=True)
    print(width_table(width_rows), "", signal_table(signal_rows, ceiling_ratios(args.ceiling)), sep="\n")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"widths": width_rows, "signal": signal_rows}, indent=1))
    return 0
