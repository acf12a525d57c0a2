"""Cell suppression over any set of additive relations (pure functions).

A published table is a set of **entries** (counts) and **relations** between them: each relation says that
some entries (its parts) add up to another (its total), as a row of cells adds up to its row total. A
reader knows every relation and every entry that is shown; every hidden entry is shown with the same
symbol, whatever the reason it is hidden, so all the reader knows of a hidden entry is that it is a count:
an integer >= 0. :func:`suppress` hides every count from 1 to ``threshold - 1`` (primary suppression) and
then enough other entries (complements) that no hidden entry is determined by what is shown:

1. a relation with exactly one hidden member gets a second one (its cheapest shown member: cells before
   totals, non-zero before zero, smaller before larger);
2. :func:`determined` finds every hidden entry that takes the same value in every solution of the reader's
   system (the relations, the shown values, every hidden entry >= 0), and each gets one more complement
   among the relations it is in (else the cheapest shown entry anywhere);

until nothing changes. **Exactness.** :func:`determined` works on the real relaxation of the reader's
system: an entry is determined when every direction in the affine hull of the feasible polytope leaves it
unchanged (the hull is the relations plus the hidden entries that are zero in every solution, which one small
linear programme per zero-valued hidden entry finds). For the tables the portal publishes, the relations of
every table form two hierarchies (laminar families of cell sets: rows within the grand total, and columns
within it; or hours within a station's day within all stations', and directions within a station within
all stations'), whose incidence matrix is totally unimodular: the polytope's vertices are integral, so an
entry's least and greatest integer values equal its least and greatest real values and the relaxation is
the integer reader exactly. ``tests/test_disclosure.py`` checks this against an integer programme.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

Key = Hashable


@dataclass(frozen=True)
class Relation:
    """``sum(parts) == total``: one additive relation a reader of the table knows."""

    parts: tuple[Key, ...]
    total: Key

    @property
    def members(self) -> tuple[Key, ...]:
        """The parts and the total."""
        return (*self.parts, self.total)


def _small(value: int, threshold: int) -> bool:
    return 0 < value < threshold


def determined(values: Mapping[Key, int], relations: Sequence[Relation], hidden: set[Key]) -> list[Key]:
    """The hidden entries whose value the shown entries and the relations fix (see the module doc).

    ``values`` holds every entry's true value (the shown ones are what the reader knows; the true values of
    the hidden ones are used only to skip the linear programmes of entries that are not zero).
    """
    import numpy as np
    from scipy.linalg import null_space
    from scipy.optimize import linprog

    variables = sorted(hidden, key=repr)
    if not variables:
        return []
    index = {k: i for i, k in enumerate(variables)}
    rows, rhs = [], []
    for rel in relations:
        row = np.zeros(len(variables))
        known = 0.0
        for key, sign in [(p, 1.0) for p in rel.parts] + [(rel.total, -1.0)]:
            if key in index:
                row[index[key]] += sign
            else:
                known -= sign * values[key]
        if row.any():
            rows.append(row)
            rhs.append(known)
    a = np.array(rows) if rows else np.zeros((0, len(variables)))
    always_zero = []
    for key in variables:  # a hidden zero that no solution can raise is an implicit equality of the polytope
        if values[key] != 0:
            continue
        objective = np.zeros(len(variables))
        objective[index[key]] = -1.0
        result = linprog(objective, A_eq=a if rows else None, b_eq=rhs if rows else None,
                         bounds=[(0, None)] * len(variables), method="highs")
        if result.status == 0 and -result.fun < 0.5:
            always_zero.append(index[key])
    hull = np.vstack([a, np.eye(len(variables))[always_zero]]) if always_zero else a
    directions = null_space(hull) if hull.shape[0] else np.eye(len(variables))
    return [key for key in variables if not np.any(np.abs(directions[index[key]]) > 1e-9)]


def suppress(values: Mapping[Key, int], relations: Sequence[Relation], threshold: int) -> tuple[set[Key], set[Key]]:
    """Primary and secondary suppression: (the primary entries, every hidden entry).

    ``values`` gives every entry of the table (cells and totals) its count; ``relations`` says how they add
    up. No hidden entry of the result is determined by the shown entries (:func:`determined`).
    """
    totals = {rel.total for rel in relations}
    containing: dict[Key, list[Relation]] = {}
    for rel in relations:
        for key in rel.members:
            containing.setdefault(key, []).append(rel)

    def cost(key: Key) -> tuple[bool, bool, int, str]:
        return (key in totals, values[key] == 0, values[key], repr(key))

    def cheapest(candidates: Sequence[Key], hidden: set[Key]) -> Key | None:
        free = [k for k in candidates if k not in hidden]
        return min(free, key=cost) if free else None

    primary = {k for k, v in values.items() if _small(v, threshold)}
    hidden = set(primary)
    while hidden:
        changed = False
        for rel in relations:
            if sum(k in hidden for k in rel.members) == 1:
                extra = cheapest(rel.members, hidden)
                if extra is not None:
                    hidden.add(extra)
                    changed = True
        if changed:
            continue
        for key in determined(values, relations, hidden):
            near = [k for rel in containing.get(key, []) for k in rel.members]
            extra = cheapest(near, hidden) or cheapest(list(values), hidden)
            if extra is not None:
                hidden.add(extra)
                changed = True
        if not changed:
            break
    return primary, hidden
