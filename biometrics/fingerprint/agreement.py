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

from collections.abc import Callable, Sequence

from biometrics.fingerprint.positions import FingerPosition
from biometrics.fingerprint.template import FingerprintTemplate

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
