"""numba kernels of the int8 compact scan (:mod:`biometrics.compact`); imported on the first search only.

``scan_rows`` streams rows ``[start, stop)`` of an int8 code matrix once, in cache-sized blocks, and for each
probe (int8 codes too) keeps

* the ``keep`` smallest *upper* bounds of a row's ranking score seen so far (a max-heap), whose largest is the
  running threshold ``U``: ``keep`` rows certainly score at most ``U``;
* every row whose *lower* bound is at most ``U`` at the time it is seen (the candidates).

The integer dot product of two code vectors is exact (int32); everything after it is float64. Compiled with
``nogil`` so that Python threads can scan disjoint row ranges at once, and cached on disk by numba.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Rows per block: the block's codes (BLOCK_ROWS x D bytes) stay in L2 while every probe of a batch passes.
BLOCK_ROWS = 2048
# Relative slack of every bound for float rounding (float32 storage of |g|^2 is within 2^-24 of it).
SLACK = 2.0**-20
# Rows whose estimates one vectorised minimum checks at once in the batch path.
CHUNK_ROWS = 256


@njit(nogil=True, cache=True, inline="always")
def _heap_replace_top(heap: np.ndarray, size: int, value: float) -> None:
    """Replace the largest value of the max-heap ``heap[:size]`` by ``value`` and restore the heap."""
    i = 0
    while True:
        left = 2 * i + 1
        if left >= size:
            break
        child = left
        right = left + 1
        if right < size and heap[right] > heap[left]:
            child = right
        if heap[child] <= value:
            break
        heap[i] = heap[child]
        i = child
    heap[i] = value


@njit(nogil=True, cache=True, inline="always")
def _heap_push(heap: np.ndarray, size: int, value: float) -> None:
    """Push ``value`` onto the max-heap ``heap[:size]`` (room for it at ``heap[size]``)."""
    i = size
    while i > 0:
        parent = (i - 1) // 2
        if heap[parent] >= value:
            break
        heap[i] = heap[parent]
        i = parent
    heap[i] = value


@njit(nogil=True, cache=True, inline="always")
def _consider(p, i, lower, upper, keep, heap, size, threshold, cand_rows, cand_lower, n_cand):
    """Row ``i`` has ``lower <= threshold`` for probe ``p``: heap its upper bound, record it as a candidate.

    Returns ``(size, threshold, n_cand, stalled)``; stalled (nothing applied) when the candidates are full
    and still more than half full after dropping those the threshold has since excluded.
    """
    cap = cand_rows.shape[1]
    if n_cand == cap:
        kept = 0
        for c in range(n_cand):
            if cand_lower[p, c] <= threshold:
                cand_rows[p, kept] = cand_rows[p, c]
                cand_lower[p, kept] = cand_lower[p, c]
                kept += 1
        n_cand = kept
        if n_cand * 2 > cap:
            return size, threshold, n_cand, True
    if size < keep:
        _heap_push(heap[p], size, upper)
        size += 1
        if size == keep:
            threshold = heap[p, 0]
    elif upper < threshold:
        _heap_replace_top(heap[p], size, upper)
        threshold = heap[p, 0]
    cand_rows[p, n_cand] = i
    cand_lower[p, n_cand] = lower
    return size, threshold, n_cand + 1, False


@njit(nogil=True, cache=True)
def _dots(codes, q, start, stop, out):
    """``out[i - start]`` = the exact integer product of code row ``i`` with ``q``, for ``start <= i < stop``."""
    dim = codes.shape[1]
    for i in range(start, stop):
        acc = np.int32(0)
        for j in range(dim):
            acc += np.int32(codes[i, j]) * np.int32(q[j])
        out[i - start] = acc


@njit(nogil=True, cache=True)
def codes_to_float(codes, start, stop, out):
    """``out[:stop - start] = codes[start:stop]`` as float32 (for a BLAS product of exact integers)."""
    dim = codes.shape[1]
    for i in range(start, stop):
        for j in range(dim):
            out[i - start, j] = np.float32(codes[i, j])


@njit(nogil=True, cache=True, inline="always")
def _block_maxima(norms, errors, code_norms, start, stop):
    """Largest error, code norm and norm of the live rows ``[start, stop)`` (zeros if none)."""
    e_max = 0.0
    c_max = 0.0
    n_max = 0.0
    for i in range(start, stop):
        if norms[i] != np.inf:
            e_max = max(e_max, np.float64(errors[i]))
            c_max = max(c_max, np.float64(code_norms[i]))
            n_max = max(n_max, np.float64(norms[i]))
    return e_max, c_max, n_max


@njit(nogil=True, cache=True, fastmath={"nnan", "nsz", "contract"})
def _smallest_estimate(products, norms, scales, factor):
    """Minimum over rows of ``norms_i - factor scales_i products_i`` (+inf for removed rows); vectorised."""
    smallest = np.inf
    for i in range(len(norms)):
        smallest = min(smallest, np.float64(norms[i]) - factor * np.float64(scales[i]) * np.float64(products[i]))
    return smallest


@njit(nogil=True, cache=True, inline="always")
def _select(
    p, products, offset, first, stop, bounds,
    scales, norms, errors, code_norms,
    probe_scales, probe_norms, probe_errors, slack_q,
    keep, heap, heap_len, cand_rows, cand_lower, cand_len,
):  # fmt: skip
    """Probe ``p`` against rows ``[first, stop)`` whose code products are ``products[i - offset]``.

    ``bounds`` = (largest error, code norm, norm) of those rows: ``bound`` below is >= every row's margin,
    so one vectorised minimum of the estimates skips a chunk of :data:`CHUNK_ROWS` rows holding no
    candidate and a cheap test skips most rows of one that does (the vectorised minimum may round
    differently from the row-by-row estimate, by far less than the bounds' slack).
    Returns the row at which the probe stalled (candidates full, nothing of that row applied), or ``stop``.
    """
    factor = 2.0 * probe_scales[p]
    qn = probe_norms[p]
    qe = probe_errors[p]
    sq = slack_q[p]
    e_max, c_max, n_max = bounds
    bound = 2.0 * (e_max * qn + c_max * qe) + SLACK * n_max + sq
    size = heap_len[p]
    threshold = heap[p, 0] if size == keep else np.inf
    n_cand = cand_len[p]
    stalled_at = stop
    chunk = first
    while chunk < stop and stalled_at == stop:
        end = min(chunk + CHUNK_ROWS, stop)
        if size == keep:
            window = products[chunk - offset : end - offset]
            if _smallest_estimate(window, norms[chunk:end], scales[chunk:end], factor) - bound > threshold:
                chunk = end
                continue
        for i in range(chunk, end):
            norm = np.float64(norms[i])
            if norm == np.inf:  # removed
                continue
            approx = norm - factor * np.float64(scales[i]) * np.float64(products[i - offset])
            if approx - bound > threshold:
                continue
            margin = 2.0 * (np.float64(errors[i]) * qn + np.float64(code_norms[i]) * qe) + SLACK * norm + sq
            lower = approx - margin
            if lower > threshold:
                continue
            size, threshold, n_cand, stalled = _consider(
                p, i, lower, approx + margin, keep, heap, size, threshold, cand_rows, cand_lower, n_cand
            )
            if stalled:
                stalled_at = i
                break
        chunk = end
    heap_len[p] = size
    cand_len[p] = n_cand
    return stalled_at


@njit(nogil=True, cache=True)
def scan_rows(
    codes, scales, norms, errors, code_norms,
    probe_codes, probe_scales, probe_norms, probe_errors, slack_q,
    keep, stop, position,
    heap, heap_len, cand_rows, cand_lower, cand_len,
):  # fmt: skip
    """Scan, for each probe ``p``, rows ``[position[p], stop)``; update its heap and candidates in place.

    Per block of :data:`BLOCK_ROWS` rows (in cache) and probe: the exact integer products of the codes,
    then the bounds. Returns True when done. When a probe's candidate buffer is full (and still more than
    half full after dropping the candidates the threshold has since excluded), that probe stops at the row
    it could not record (``position[p]``, nothing of that row applied yet) and the call returns False: the
    caller grows the buffers and calls again; heaps, candidates and positions carry over.
    """
    m = probe_codes.shape[0]
    products = np.empty(BLOCK_ROWS, dtype=np.int32)
    start = stop
    for p in range(m):
        start = min(start, position[p])
    done = True
    for block in range(start, stop, BLOCK_ROWS):
        block_end = min(block + BLOCK_ROWS, stop)
        bounds = _block_maxima(norms, errors, code_norms, block, block_end)
        for p in range(m):
            first = position[p]
            if first < block or first >= block_end:
                continue  # stalled in an earlier block, or already past this one
            _dots(codes, probe_codes[p], first, block_end, products)
            at = _select(
                p, products, first, first, block_end, bounds,
                scales, norms, errors, code_norms,
                probe_scales, probe_norms, probe_errors, slack_q,
                keep, heap, heap_len, cand_rows, cand_lower, cand_len,
            )  # fmt: skip
            position[p] = at
            if at < block_end:
                done = False
    return done


@njit(nogil=True, cache=True)
def select_rows(
    dots, start, stop,
    scales, norms, errors, code_norms,
    probe_scales, probe_norms, probe_errors, slack_q,
    keep, position,
    heap, heap_len, cand_rows, cand_lower, cand_len,
):  # fmt: skip
    """As :func:`scan_rows` for rows ``[start, stop)`` whose code products are given: ``dots[p, i - start]``.

    Each probe resumes at ``position[p]`` (in ``[start, stop]``); returns False if one stalled (see
    :func:`scan_rows`): grow the buffers and call again with the same ``dots``.
    """
    bounds = _block_maxima(norms, errors, code_norms, start, stop)
    done = True
    for p in range(dots.shape[0]):
        first = position[p]
        if first >= stop:
            continue
        at = _select(
            p, dots[p], start, first, stop, bounds,
            scales, norms, errors, code_norms,
            probe_scales, probe_norms, probe_errors, slack_q,
            keep, heap, heap_len, cand_rows, cand_lower, cand_len,
        )  # fmt: skip
        position[p] = at
        if at < stop:
            done = False
    return done
