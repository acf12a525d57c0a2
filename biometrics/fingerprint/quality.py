"""Image quality 0..100 of a fingerprint capture, from what the extractor itself relies on.

Three factors, each in [0, 1], multiplied:
- area: foreground area against ``FULL_AREA`` (a 500 dpi capture of a fingertip on a small sensor);
- clarity: mean orientation coherence over the foreground (ridges that run one clear way);
- regularity: fraction of foreground blocks whose ridge period is measurable within the range of fingers.
"""

from __future__ import annotations

import numpy as np

from biometrics.fingerprint.frequency import block_periods

FULL_AREA = 180.0 * 180.0  # pixels at 500 dpi (about 9 x 9 mm; a ZFM window is 13 x 14.6 mm)
CLARITY_LOW, CLARITY_HIGH = 0.15, 0.55


def quality_factors(norm: np.ndarray, mask: np.ndarray, theta: np.ndarray, coherence: np.ndarray
                    ) -> dict[str, float]:
    """The three factors (area, clarity, regularity), each in [0, 1]."""
    area_px = float(mask.sum())
    if area_px == 0:
        return {"area": 0.0, "clarity": 0.0, "regularity": 0.0}
    area = min(1.0, area_px / FULL_AREA)
    clarity = float(np.clip((coherence[mask].mean() - CLARITY_LOW) / (CLARITY_HIGH - CLARITY_LOW), 0, 1))
    _, periods = block_periods(norm, theta, mask)
    regularity = float(np.isfinite(periods).mean()) if periods.size else 0.0
    return {"area": area, "clarity": clarity, "regularity": regularity}


def quality_score(factors: dict[str, float]) -> float:
    """0..100 from the factors."""
    return float(100.0 * factors["area"] * factors["clarity"] * factors["regularity"])
