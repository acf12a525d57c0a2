"""The impressions of one finger enrolled together must be of one finger (as an enrolment's face photographs must
be of one person: :data:`biometrics.multiframe.MIN_ENROL_AGREEMENT`).

A desk takes each finger several times (three by default). Were one of them another finger (the applicant moved
to the next finger, or two scans were sent under one position), the subject's record would hold a finger under a
position it is not, and every later search would compare probes with it as that finger. So the impressions sent
for one position must be one finger, and so must those sent without one (position 0: a search takes a template of
unknown position for possibly any of the subject's fingers, so several fingers sent without their positions would
score as one): each must match another at :data:`MIN_IMPRESSION_AGREEMENT` or more, directly or through other
impressions (their agreement graph is connected). Not every pair is asked to match: two impressions of one finger
placed at different places may share too little of it to match each other and both match a third, and together
they cover more of the finger than either alone; a finger apart from the rest matches none of them.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from biometrics.fingerprint.positions import FingerPosition
from biometrics.fingerprint.template import FingerprintTemplate

T = TypeVar("T")

# Each impression must match another of its finger at this false-match score or more: FMR 1% by the shipped
# calibration (biometrics/calibration/fingerprint.json: 14,400 comparisons of 2,880 distinct impostor pairs of
# FVC2002 DB1_B cut as a ZFM gives them, which measure FMR 1%: the rule of three needs 300). FNMR at FMR 1% on
# FVC2002 (docs/fingerprint.md, table "Accuracy (FVC2002 B sets)", column FMR100): DB1_B 1.07% on whole images,
# 9.64% on the ZFM window (`sensor1`), 17.05% off centre (`shifted`); held out, the ZFM window, DB2_B 12.86%, DB3_B
# 3.57%, DB4_B 2.14%. At s >= 2 itself on the ZFM window, over the images enrolment accepts (docs/fingerprint.md,
# "Enrolment: the impressions of a finger must agree", `checkpoint-bench impression-agreement`, commit fa402d3,
# 2026-12-01 14:27-14:29 UTC; DB1_B's 101_5 is refused for quality and left out): FNMR 9.52 / 12.86 / 5.00 / 1.07%
# and FMR 0.61 / 1.25 / 0.38 / 5.03% (DB4_B, synthetic: the calibration does not carry) on DB1_B / DB2_B / DB3_B /
# DB4_B; the rule (joined through matches) refuses 7.79 / 11.43 / 1.61 / 0.18% of one finger's three impressions
# and lets 0.93 / 1.85 / 0.69 / 8.90% of wrong third fingers through (every pair matching: 21-27% refused on
# DB1_B-DB2_B). A refusal costs a new capture of the finger; at s = 3 (FMR 0.1%) DB1_B's ZFM pairs lose 13.19%
# (15.36% in the accuracy table, "FNMR % at s>=3", which counts 101_5 as failing), at s = 1 another finger passes
# one time in ten.
MIN_IMPRESSION_AGREEMENT = 2.0


def finger_label(position: int) -> str:
    """How an officer reads a finger position: ``the right index``, ``the finger sent without a position``."""
    if position == FingerPosition.UNKNOWN:
        return "the finger sent without a position"
    return "the " + FingerPosition(position).name.lower().replace("_", " ")


def impression_groups(templates: Sequence[FingerprintTemplate], score: Callable[[FingerprintTemplate,
                      FingerprintTemplate], float], min_score: float = MIN_IMPRESSION_AGREEMENT
                      ) -> tuple[list[list[int]], float]:
    """The impressions of one finger (indices into ``templates``) in groups that agree: two impressions are in one
    group when they score ``min_score`` or more (``score``: the false-match score of two templates), directly or
    through others. Largest group first (the earliest impression breaking ties); one group when they all agree.
    Also the best score between two groups (0 with one group): what the message to the officer reports."""
    n = len(templates)
    group = list(range(n))  # each impression's group: the lowest impression it is joined to
    pairs = [(a, b, score(templates[a], templates[b])) for a in range(n) for b in range(a + 1, n)]
    for a, b, s in pairs:
        if s >= min_score:
            old, new = max(group[a], group[b]), min(group[a], group[b])
            group = [new if g == old else g for g in group]
    members: dict[int, list[int]] = {}
    for i, g in enumerate(group):
        members.setdefault(g, []).append(i)
    groups = sorted(members.values(), key=lambda m: (-len(m), m[0]))
    return groups, max((s for a, b, s in pairs if group[a] != group[b]), default=0.0)


def disagreement(position: int, groups: Sequence[Sequence[int]], best: float,
                 min_score: float = MIN_IMPRESSION_AGREEMENT) -> str:
    """The officer's message for impressions of one finger in several groups (:func:`impression_groups`)."""
    main = [i + 1 for i in groups[0]]
    apart = sorted(i + 1 for g in groups[1:] for i in g)
    several = "; several fingers: send each under its position" if position == FingerPosition.UNKNOWN else ""
    return (f"The impressions of {finger_label(position)} do not agree: capture that finger again ({_numbered(apart)} "
            f"{'matches' if len(apart) == 1 else 'match'} none of {_numbered(main)}; best score {best:.1f}, under "
            f"{min_score:g}{several}).")


def _numbered(indices: Sequence[int]) -> str:
    """``impression 2``, ``impressions 1 and 3``, ``impressions 1, 2 and 4``."""
    if len(indices) == 1:
        return f"impression {indices[0]}"
    return f"impressions {', '.join(map(str, indices[:-1]))} and {indices[-1]}"


# -- one finger under two positions ---------------------------------------------------------------------------------
# The common desk mistake: the applicant does not move to the next finger, and one finger is enrolled under two
# positions; every later search would then count it twice (a review: DB1_B 101 as the right and the left index, an
# impostor finger sent under both positions passed 3 times in 1,280). Two declared positions are one finger when the
# median of their impressions' cross scores (each impression of one against each of the other) is
# SAME_FINGER_MEDIAN or more over SAME_FINGER_MIN_PAIRS pairs or more, or when one cross pair scores
# SAME_FINGER_SINGLE or more. Measured on the FVC2002 B sets' ZFM windows with the shipped calibration
# (`checkpoint-bench impression-agreement --positions`, 2026-12-01; docs/fingerprint.md, "Enrolment: the impressions
# of a finger must agree"; over the images enrolment accepts: DB1_B's 101_5 is refused for quality): DIFFERENT
# fingers, 3 impressions each, refused as one finger 0 of 130,536 / 141,120 / 141,120 position pairs on DB1_B /
# DB2_B / DB3_B, 0.021% on DB4_B (synthetic: the calibration does not carry); a ten-finger enrolment (a set's 10
# fingers, 3 random impressions each: 45 position pairs) refused 0 of 2,000 times on DB1_B-DB3_B, 0.70% on DB4_B
# (each set has only 10 fingers: 45 finger pairs behind every figure); one impression each, 0 of 2,808 / 2,880
# pairs. The SAME finger split into two positions of 3 found 99.85 / 99.68 / 99.32 / 100% of 2,590 / 2,800 splits
# (its impressions 1-3 and 4-6, the desk's mistake: 40 of 40 fingers); of one impression each, 70-74% on
# DB1_B-DB3_B, 91% on DB4_B. A scratch sweep of the same function (median 1.5-3, single pair 6-12, 1,000 enrolments
# a set): the median at 2 (FMR 1% a pair) refuses 14.7% of DB4_B's ten-finger enrolments, at 3 finds 95-97% on
# DB1_B-DB3_B without the single-pair rule; a single pair >= 6 adds no false refusal on any set.
SAME_FINGER_MEDIAN = 2.5
SAME_FINGER_MIN_PAIRS = 3
SAME_FINGER_SINGLE = 6.0


def one_finger(cross: Sequence[float], median: float = SAME_FINGER_MEDIAN, single: float = SAME_FINGER_SINGLE,
               min_pairs: int = SAME_FINGER_MIN_PAIRS) -> bool:
    """Whether two positions' impressions, whose cross scores are ``cross``, are one finger (the rule above)."""
    if not cross:
        return False
    return max(cross) >= single or (len(cross) >= min_pairs and statistics.median(cross) >= median)


def positions_of_one_finger(by_position: Mapping[int, Sequence[T]], score: Callable[[T, T], float]
                            ) -> list[tuple[int, int, list[float]]]:
    """The pairs of declared positions (position 0 left out) whose impressions are one finger
    (:func:`one_finger`), lowest positions first, with their cross scores."""
    positions = sorted(p for p in by_position if p != FingerPosition.UNKNOWN)
    out = []
    for i, a in enumerate(positions):
        for b in positions[i + 1:]:
            cross = [score(x, y) for x in by_position[a] for y in by_position[b]]
            if one_finger(cross):
                out.append((a, b, cross))
    return out


def one_finger_message(a: int, b: int, cross: Sequence[float]) -> str:
    """The officer's message for two positions whose impressions are one finger."""
    first = finger_label(a)
    return (f"{first[0].upper()}{first[1:]} and {finger_label(b)} look like one finger: place each finger in turn "
            f"and capture both again ({len(cross)} {'comparison' if len(cross) == 1 else 'comparisons'} of their "
            f"impressions, median score {statistics.median(cross):.1f}, best {max(cross):.1f}).")
