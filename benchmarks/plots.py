"""The benchmarks' figures: DET, ROC, score distributions, CMC, open-set DET and load over time.

Matplotlib with the Agg backend (no display); each function writes one PNG and returns its path.
DET axes are normal deviates (probit) labelled in percent, as in Martin et al., "The DET curve in
assessment of detection task performance" (Eurospeech 1997) and ISO/IEC 19795-1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from scipy import special

from benchmarks.metrics import DetCurve

_DET_TICKS = [0.000001, 0.00001, 0.00002, 0.00005,
              0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95]


def _probit(p: np.ndarray) -> np.ndarray:
    return special.ndtri(np.asarray(p, dtype=np.float64))


def _pct(p: float) -> str:
    return f"{100 * p:g}"


def _det_axes(ax: plt.Axes, lowest: float, xlabel: str, ylabel: str, highest: float = 0.6) -> None:
    ticks = [t for t in _DET_TICKS if min(lowest, 0.01) / 2 <= t <= highest]
    lo = _probit(max(min(ticks), 1e-6))
    ax.set_xticks(_probit(ticks))
    ax.set_xticklabels([_pct(t) for t in ticks], rotation=45)
    ax.set_yticks(_probit(ticks))
    ax.set_yticklabels([_pct(t) for t in ticks])
    ax.set_xlim(lo, _probit(highest))
    ax.set_ylim(lo, _probit(highest))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def det_plot(
    curves: Mapping[str, DetCurve],
    path: Path,
    title: str = "DET",
    marks: Mapping[str, Sequence[tuple[float, float, str]]] | None = None,
    legend_loc: str = "upper right",
) -> Path:
    """DET curves (FNMR against FMR on normal-deviate axes); ``marks``: (fmr, fnmr, label) per curve.

    Points with a rate of exactly 0 or 1 have no normal deviate and are not drawn.
    """
    fig, ax = plt.subplots(figsize=(6, 5.5))
    lowest = 1.0
    for label, c in curves.items():
        ok = (c.fmr > 0) & (c.fmr < 1) & (c.fnmr > 0) & (c.fnmr < 1)
        if ok.any():
            lowest = min(lowest, float(c.fmr[ok].min()), float(c.fnmr[ok].min()))
            (line,) = ax.plot(_probit(c.fmr[ok]), _probit(c.fnmr[ok]), drawstyle="steps-post", label=label)
            for fmr, fnmr, text in (marks or {}).get(label, []):
                if 0 < fmr < 1 and 0 < fnmr < 1:
                    ax.plot(_probit(fmr), _probit(fnmr), "o", color=line.get_color())
                    ax.annotate(text, (_probit(fmr), _probit(fnmr)), fontsize=7, xytext=(4, 4),
                                textcoords="offset points")
    ax.plot(_probit([1e-6, 0.6]), _probit([1e-6, 0.6]), ":", color="grey", lw=0.8, label="FMR = FNMR")
    _det_axes(ax, max(lowest, 1e-6), "False match rate FMR (%)", "False non-match rate FNMR (%)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc=legend_loc)
    return _save(fig, path)


def roc_plot(curves: Mapping[str, DetCurve], path: Path, title: str = "ROC") -> Path:
    """ROC curves: true match rate 1 - FNMR against FMR on a log axis."""
    fig, ax = plt.subplots(figsize=(6, 5))
    for label, c in curves.items():
        ok = c.fmr > 0
        ax.plot(c.fmr[ok], 1.0 - c.fnmr[ok], drawstyle="steps-post", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("False match rate FMR")
    ax.set_ylabel("True match rate 1 - FNMR")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def score_distributions(
    panels: Mapping[str, tuple[np.ndarray, np.ndarray, Sequence[tuple[float, str]]]],
    path: Path,
    xlabels: Mapping[str, str] | None = None,
) -> Path:
    """Genuine and impostor score histograms, one panel per pipeline, with threshold lines.

    ``panels[label] = (genuine, impostor, [(threshold, text), ...])``.
    """
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 3.2 * len(panels)), squeeze=False)
    for ax, (label, (genuine, impostor, lines)) in zip(axes[:, 0], panels.items(), strict=True):
        both = np.concatenate([genuine, impostor])
        bins = np.linspace(float(both.min()), float(both.max()), 60) if both.size else 10
        ax.hist(impostor, bins=bins, alpha=0.6, label=f"impostor (n={len(impostor)})", color="tab:red")
        ax.hist(genuine, bins=bins, alpha=0.6, label=f"genuine (n={len(genuine)})", color="tab:green")
        for value, text in lines:
            ax.axvline(value, color="black", ls="--", lw=1, label=f"threshold: {text}")
        ax.set_title(label)
        ax.set_xlabel((xlabels or {}).get(label, "score (higher = more alike)"))
        ax.set_ylabel("comparisons")
        ax.legend(fontsize=8)
    return _save(fig, path)


def cmc_plot(curves: Mapping[str, np.ndarray], path: Path, title: str = "CMC") -> Path:
    """Cumulative match characteristic: identification rate against rank."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for label, rates in curves.items():
        ranks = np.arange(1, len(rates) + 1)
        ax.plot(ranks, rates, marker="o", ms=3, label=label)
    ax.set_xlabel("rank")
    ax.set_ylabel("identification rate")
    ax.set_ylim(min(0.9, *(float(np.min(r)) for r in curves.values())) - 0.02, 1.0)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def open_set_det_plot(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str = "Open-set identification"
) -> Path:
    """FNIR against FPIR on normal-deviate axes; ``curves[label] = (fpir, fnir)``."""
    fig, ax = plt.subplots(figsize=(6, 5.5))
    lowest = 1.0
    for label, (fpir, fnir) in curves.items():
        ok = (fpir > 0) & (fpir < 1) & (fnir > 0) & (fnir < 1)
        if ok.any():
            lowest = min(lowest, float(fpir[ok].min()), float(fnir[ok].min()))
            ax.plot(_probit(fpir[ok]), _probit(fnir[ok]), drawstyle="steps-post", label=label)
    _det_axes(ax, max(lowest, 1e-4), "False positive identification rate FPIR (%)",
              "False negative identification rate FNIR (%)", highest=0.95)
    ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return _save(fig, path)


def load_plot(
    series: Mapping[str, dict[str, np.ndarray]],
    memory: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: Path,
    title: str = "Load",
) -> Path:
    """Latency and throughput over time per phase, and server memory.

    ``series[phase] = {"t": seconds since phase start, "latency_ms": ..., "ok": bool}``;
    ``memory[phase] = (t, rss_mib)``.
    """
    fig, (ax_lat, ax_tp, ax_mem) = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
    for phase, s in series.items():
        t, lat, ok = s["t"], s["latency_ms"], s["ok"]
        ax_lat.plot(t[ok], lat[ok], ".", ms=2, alpha=0.5, label=f"{phase} ok")
        if (~ok).any():
            ax_lat.plot(t[~ok], lat[~ok], "x", ms=4, label=f"{phase} error")
        if t.size:
            done = t + lat / 1000.0
            edges = np.arange(0.0, float(done.max()) + 1.0, 1.0)
            counts, _ = np.histogram(done[ok], bins=edges)
            ax_tp.step(edges[:-1], counts, where="post", label=phase)
    for phase, (t, rss) in memory.items():
        ax_mem.plot(t, rss, label=phase)
    ax_lat.set_yscale("log")
    ax_lat.set_ylabel("latency (ms)")
    ax_tp.set_ylabel("completed calls / s")
    ax_mem.set_ylabel("server RSS (MiB)")
    ax_mem.set_xlabel("seconds since the phase started")
    for ax in (ax_lat, ax_tp, ax_mem):
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    ax_lat.set_title(title)
    return _save(fig, path)
