"""Cell suppression on tables written as flow networks (pure functions), with an exact, linear-time check.

**Tables as networks.** Every table the portal protects is a set of entries (counts) whose additive
relations form two hierarchies of cell sets: the rows within the grand total and the columns within it; or a
day's hours within a station's day within all stations', and its directions within the station's month
within all stations' month. Such a table is a flow network (:class:`Network`): each entry is an arc, each
total the arc that carries what its parts bring in or take out, and every relation is flow conservation at a
node (a cell runs from its column node to its row node, a row total from the row node to a root, the grand
total between the two roots, a column total from the root to the column node). Every entry's value is the
flow on its arc; a reader who knows the shown entries and that every hidden one is a count (>= 0: one symbol
for every hidden count) knows exactly the flows that conserve at every node, and nothing more.

**The check** (:func:`determined`): a hidden entry is determined when it has the same value in every such
flow. From any feasible flow (the true values, or one a linear programme finds), a hidden entry at zero is
determined (it stays zero) when no cycle of the residual graph goes through it (the strongly connected
components of that graph say so), and every other hidden entry is determined when it is a bridge of the
undirected graph of the hidden entries that are not stuck at zero (no cycle moves it). Network matrices are
totally unimodular, so the least and greatest integer value of an entry are its least and greatest real
value: this is the integer reader exactly, not a relaxation (``tests/test_disclosure.py`` checks it against
an integer programme).

**Suppression** (:func:`suppress`): every count from 1 to ``threshold - 1`` is hidden (primary), then until
nothing changes: (0) every entry of a line (:attr:`Network.lines`: a total and the entries it adds up) whose
total is hidden is hidden, zeros included (but for an entry of another line whose total is shown as 0: its 0
is public anyway), (1) a node with exactly one hidden arc gets a second one, and (2)
every determined entry gets one more hidden neighbour (an arc at one of its nodes), always the cheapest still
shown: cells before totals, non-zero before zero, smaller before larger.

**Why rule (0): attribute disclosure.** Rules (1) and (2) protect a hidden count's *value*; they say nothing
about where the people behind it are. A line whose total is hidden and whose other entries are shown as 0 puts
everyone of the line in its hidden entries: one traveller at a station on a day was published as ``[c]`` in one
hour and one direction and 0 in the 47 other cells (his hour and direction), one rating in a station's month as
0, ``[c]``, 0, 0 (its value). With the whole line hidden, and no hidden entry determined (so none is stuck at 0),
every hidden entry of the line can be non-zero in some table consistent with what is published, and an entry left
shown is a 0 that another line's shown 0 total makes public for everybody: no category (hour, direction, rating,
station) can be shown to hold everyone of the line.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

Key = Hashable
Node = Hashable


@dataclass(frozen=True)
class Network:
    """A table as a flow network: each entry is an arc (tail node, head node); ``totals`` are the entries
    that add others up (complements are taken among the cells first); ``lines`` are the table's lines, each a
    total with the entries it adds up (a row total and its cells, a station's day and its hours...): a line
    whose total is hidden is hidden whole (:func:`suppress`, rule 0)."""

    arcs: dict[Key, tuple[Node, Node]]
    totals: frozenset[Key] = field(default_factory=frozenset)
    lines: tuple[tuple[Key, tuple[Key, ...]], ...] = ()

    def at(self) -> dict[Node, list[Key]]:
        """The arcs at each node."""
        out: dict[Node, list[Key]] = {}
        for key, (tail, head) in self.arcs.items():
            out.setdefault(tail, []).append(key)
            out.setdefault(head, []).append(key)
        return out

    def relations(self) -> list[tuple[list[Key], list[Key]]]:
        """Conservation at each node: (the arcs coming in, the arcs going out), whose flows add up alike."""
        inward: dict[Node, list[Key]] = {}
        outward: dict[Node, list[Key]] = {}
        for key, (tail, head) in self.arcs.items():
            outward.setdefault(tail, []).append(key)
            inward.setdefault(head, []).append(key)
        return [(inward.get(n, []), outward.get(n, [])) for n in {*inward, *outward}]


def feasible_flow(network: Network, known: Mapping[Key, int], hidden: set[Key]) -> dict[Key, float]:
    """A flow that conserves at every node, with the ``known`` values on the shown arcs and every hidden arc
    >= 0 (a linear programme: for tables whose hidden values are not kept). Raises ValueError if none."""
    import numpy as np
    from scipy.optimize import linprog
    from scipy.sparse import lil_matrix

    variables = sorted(hidden, key=repr)
    if not variables:
        return {k: float(known[k]) for k in network.arcs}
    index = {k: i for i, k in enumerate(variables)}
    relations = [r for r in network.relations() if any(k in index for k in (*r[0], *r[1]))]
    a = lil_matrix((len(relations), len(variables)))
    b = np.zeros(len(relations))
    for row, (inward, outward) in enumerate(relations):
        for keys, sign in ((inward, 1.0), (outward, -1.0)):
            for k in keys:
                if k in index:
                    a[row, index[k]] += sign
                else:
                    b[row] -= sign * known[k]
    result = linprog(np.zeros(len(variables)), A_eq=a.tocsr(), b_eq=b, bounds=[(0, None)] * len(variables),
                     method="highs")
    if result.status != 0:
        raise ValueError("the shown values admit no flow: the table is not consistent")
    flow: dict[Key, float] = {k: float(known[k]) for k in network.arcs if k not in index}
    flow.update({k: float(result.x[i]) for k, i in index.items()})
    return flow


def _bridges(edges: Sequence[tuple[Key, Node, Node]]) -> set[Key]:
    """The edges (key, end, end) of an undirected multigraph that lie on no cycle (iterative Tarjan)."""
    adjacent: dict[Node, list[tuple[Node, int]]] = {}
    for i, (_key, u, v) in enumerate(edges):
        adjacent.setdefault(u, []).append((v, i))
        adjacent.setdefault(v, []).append((u, i))
    order: dict[Node, int] = {}
    low: dict[Node, int] = {}
    out: set[Key] = set()
    for root in adjacent:
        if root in order:
            continue
        order[root] = low[root] = len(order)
        stack = [(root, -1, iter(adjacent[root]))]
        while stack:
            node, via, neighbours = stack[-1]
            for other, edge in neighbours:
                if edge == via:
                    continue
                if other not in order:
                    order[other] = low[other] = len(order)
                    stack.append((other, edge, iter(adjacent[other])))
                    break
                low[node] = min(low[node], order[other])
            else:
                stack.pop()
                if stack:
                    parent = stack[-1][0]
                    low[parent] = min(low[parent], low[node])
                    if low[node] > order[parent]:
                        out.add(edges[via][0])
    return out


def determined(network: Network, flow: Mapping[Key, float], hidden: set[Key]) -> list[Key]:
    """The hidden entries that have one value in every flow the shown entries allow (see the module doc).

    ``flow`` is any feasible flow: every arc's value (the true values, or :func:`feasible_flow`'s).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    nodes = {n: i for i, n in enumerate({n for k in hidden for n in network.arcs[k]})}
    tails, heads = [], []
    for k in hidden:  # the residual graph: a hidden arc can grow; one above zero can shrink
        u, v = (nodes[n] for n in network.arcs[k])
        tails.append(u)
        heads.append(v)
        if flow[k] > 0.5:
            tails.append(v)
            heads.append(u)
    if not nodes:
        return []
    graph = coo_matrix(([1] * len(tails), (tails, heads)), shape=(len(nodes), len(nodes))).tocsr()
    _count, component = connected_components(graph, directed=True, connection="strong")
    stuck = {k for k in hidden if flow[k] <= 0.5
             and component[nodes[network.arcs[k][0]]] != component[nodes[network.arcs[k][1]]]}
    free = [(k, *network.arcs[k]) for k in sorted(hidden - stuck, key=repr)]
    return sorted(stuck | _bridges(free), key=repr)


def suppress(values: Mapping[Key, int], network: Network, threshold: int) -> tuple[set[Key], set[Key]]:
    """Primary and secondary suppression: (the primary entries, every hidden entry).

    ``values`` gives every entry (arc) of the table its count. No hidden entry of the result is determined
    by the shown ones (:func:`determined`), and every line of ``network`` whose total is hidden is hidden whole.
    """
    at = network.at()

    def cost(key: Key) -> tuple[bool, bool, int, str]:
        return (key in network.totals, values[key] == 0, values[key], repr(key))

    def cheapest(candidates: Iterable[Key], hidden: set[Key]) -> Key | None:
        free = [k for k in candidates if k not in hidden]
        return min(free, key=cost) if free else None

    primary = {k for k, v in values.items() if 0 < v < threshold}
    hidden = set(primary)
    while hidden:
        changed = False
        # rule (0): a line whose total is hidden is hidden whole, zeros too, but for an entry of a line whose
        # total is shown as 0 (its 0 is public whatever this line shows: hidden, it would only be determined)
        known_zero = {p for total, parts in network.lines if values[total] == 0 and total not in hidden for p in parts}
        for total, parts in network.lines:
            if total in hidden:
                missing = [p for p in parts if p not in hidden and p not in known_zero]
                if missing:
                    hidden.update(missing)
                    changed = True
        for keys in at.values():
            if sum(k in hidden for k in keys) == 1:
                extra = cheapest(keys, hidden)
                if extra is not None:
                    hidden.add(extra)
                    changed = True
        if changed:
            continue
        for key in determined(network, values, hidden):
            near = [k for n in network.arcs[key] for k in at[n]]
            extra = cheapest(near, hidden) or cheapest(network.arcs, hidden)
            if extra is not None:
                hidden.add(extra)
                changed = True
        if not changed:
            break
    return primary, hidden
