"""1:N matcher speed: TemplateIndex (exact, float16), int8 CompactIndex, FAISS IndexFlatL2, naive face_distance.

Usage::

    flock -x /tmp/checkpoint-bench.lock checkpoint-bench matcher --sizes 10000,100000,1000000 --json matcher.json

Gallery: N random unit vectors, D=128 float32 (seeded), one subject per template; probes: random unit vectors.
For each size the same data goes to every contender: our :class:`biometrics.matcher.TemplateIndex` (exact and
compact mode, single probe and a batch), ``face_recognition.face_distance`` + ``argpartition`` (the naive
baseline; the batch is a loop of it, run only up to ``--naive-batch-max`` rows, estimated beyond) and
``faiss.IndexFlatL2`` at each OpenMP thread count in ``--faiss-threads`` (its best per case is the reference),
and :class:`biometrics.compact.CompactIndex` (int8 scan, proven shortlist, exact re-rank) timed interleaved with
the exact TemplateIndex (exact, int8, exact, ... so both see the same load), its first-call cost reported.
Times are medians over ``--repeats`` runs after one warm-up. Every top-k is checked against an exact float64
brute force (ids and order; "ties aside" accepts swaps of distances equal within 1e-6).

Bandwidth: a single-probe scan reads N*D*4 bytes (exact) or N*D*2 (compact). The machine's copy bandwidth is
measured in the same run with ``np.copyto`` of a large float32 array (one thread, and two threads each copying
half); it is reported as bytes copied/s (= bytes the copy reads per second) and bytes moved/s (read + write).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._util import log

COMMAND = "matcher"
DIM = 128


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``checkpoint-bench matcher``."""
    parser.add_argument("--sizes", default="10000,100000,1000000", help="gallery sizes, comma-separated")
    parser.add_argument("--json", type=Path, required=True, help="where to write the figures")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case (median; warm-up excluded)")
    parser.add_argument("--batch", type=int, default=64, help="probes in the batch case")
    parser.add_argument("--k", type=int, default=10, help="candidates per probe")
    parser.add_argument("--seed", type=int, default=0, help="seed of the gallery and probes")
    parser.add_argument("--faiss-threads", default="1,2", help="FAISS OpenMP thread counts to try")
    parser.add_argument("--naive-batch-max", type=int, default=100_000,
                        help="largest N at which the naive batch loop runs (beyond: single time x batch, estimated)")
    parser.add_argument("--copy-gib", type=float, default=1.0, help="size of the copy-bandwidth array (GiB)")


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float]]:
    """Median seconds of ``repeats`` calls of ``fn`` after one untimed warm-up, and all the timings."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def machine() -> dict[str, Any]:
    """Cores, CPU model, numpy's BLAS, library versions, load average."""
    from benchmarks.report import cpu_model

    blas: Any = None
    try:
        from threadpoolctl import threadpool_info

        blas = [{k: v for k, v in i.items() if k != "filepath"} for i in threadpool_info()]
    except ImportError:
        pass
    import faiss

    return {
        "cores": os.cpu_count(), "cpu_model": cpu_model(), "numpy": np.__version__, "blas": blas,
        "faiss": faiss.__version__, "python": platform.python_version(), "load_average": os.getloadavg(),
    }


def copy_bandwidth(gib: float, repeats: int) -> dict[str, float]:
    """Median copy rate of ``gib`` GiB of float32 with ``np.copyto``: one thread, and two threads (halves)."""
    n = int(gib * (1 << 30)) // 4
    src = np.ones(n, dtype=np.float32)
    dst = np.zeros_like(src)
    one, _ = timed(lambda: np.copyto(dst, src), repeats)

    def halves() -> None:
        h = n // 2
        t = threading.Thread(target=np.copyto, args=(dst[h:], src[h:]))
        t.start()
        np.copyto(dst[:h], src[:h])
        t.join()

    two, _ = timed(halves, repeats)
    nbytes = n * 4
    return {
        "bytes": nbytes, "seconds_1_thread": one, "seconds_2_threads": two,
        "copied_per_s_1_thread": nbytes / one, "moved_per_s_1_thread": 2 * nbytes / one,
        "copied_per_s_2_threads": nbytes / two, "moved_per_s_2_threads": 2 * nbytes / two,
    }


def unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    out = np.empty((n, DIM), dtype=np.float32)
    for a in range(0, n, 100_000):
        b = min(a + 100_000, n)
        x = rng.standard_normal((b - a, DIM), dtype=np.float32)
        out[a:b] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def reference(gallery: np.ndarray, probes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k (ids, distances) per probe in float64: a float64 product shortlists, differences decide."""
    q = probes.astype(np.float64)
    shortlist = k + 64
    best_i: list[np.ndarray] = []
    best_d: list[np.ndarray] = []
    for a in range(0, len(gallery), 100_000):
        g = gallery[a : a + 100_000].astype(np.float64)
        d2 = (g * g).sum(1)[None, :] - 2.0 * q @ g.T
        c = min(shortlist, g.shape[0])
        idx = np.argpartition(d2, c - 1, axis=1)[:, :c]
        best_i.append(idx + a)
        best_d.append(np.take_along_axis(d2, idx, 1))
    cand = np.concatenate(best_i, axis=1)
    d2 = np.concatenate(best_d, axis=1)
    top = np.take_along_axis(cand, np.argsort(d2, axis=1, kind="stable")[:, :shortlist], 1)
    ids, dists = [], []
    for i in range(len(q)):
        diff = gallery[top[i]].astype(np.float64) - q[i]
        dist = np.sqrt(np.einsum("ij,ij->i", diff, diff))
        order = np.lexsort((top[i], dist))[:k]
        ids.append(top[i][order])
        dists.append(dist[order])
    return np.array(ids), np.array(dists)


def agreement(ids: np.ndarray, dists: np.ndarray, want_ids: np.ndarray, want_d: np.ndarray) -> dict[str, bool]:
    """Same ids in the same order; or the same up to swaps among distances equal within 1e-6."""
    ids = np.asarray(ids)
    equal = ids.shape == want_ids.shape and bool((ids == want_ids).all())
    ties = equal or (ids.shape == want_ids.shape and bool(np.allclose(dists, want_d, rtol=0, atol=1e-6)))
    return {"equal": equal, "equal_ties_aside": ties}


def _ours(index: Any, probes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    found = index.search(probes, k)
    return (np.array([[int(s) for s, _ in r] for r in found]), np.array([[d for _, d in r] for r in found]))


def bench_size(n: int, args: argparse.Namespace, copy: dict[str, float]) -> dict[str, Any]:
    """Every contender at gallery size ``n``."""
    import face_recognition
    import faiss

    from biometrics.matcher import TemplateIndex

    k, reps = args.k, args.repeats
    rng = np.random.default_rng(args.seed)
    log(f"N={n:,}: generating gallery")
    gallery = unit_vectors(rng, n)
    probes = unit_vectors(np.random.default_rng(args.seed + 1), args.batch)
    single = probes[:1]
    log(f"N={n:,}: float64 reference")
    want_i, want_d = reference(gallery, probes, k)
    row: dict[str, Any] = {"n": n, "dim": DIM, "k": k, "batch": args.batch}
    ids = [str(i) for i in range(n)]

    exact_index = None
    for mode in ("exact", "compact"):
        log(f"N={n:,}: ours ({mode}): bulk add")
        index = TemplateIndex(DIM, compact=mode == "compact")
        t = time.perf_counter()
        index.add_many(ids, gallery)
        add_s = time.perf_counter() - t
        log(f"N={n:,}: ours ({mode}): searches")
        s_single, _ = timed(lambda index=index: index.search(single[0], k), reps)
        s_batch, _ = timed(lambda index=index: index.search(probes, k), reps)
        got_i, got_d = _ours(index, probes, k)
        one_i, one_d = _ours(index, single[0], k)
        scanned = n * DIM * (2 if mode == "compact" else 4)
        row[f"ours_{mode}"] = {
            "add_many_s": add_s, "single_s": s_single, "batch_s": s_batch, "nbytes": index.nbytes,
            "single_topk": agreement(one_i, one_d, want_i[:1], want_d[:1]),
            "batch_topk": agreement(got_i, got_d, want_i, want_d),
            "scan_bytes": scanned, "scan_bytes_per_s": scanned / s_single,
            "scan_vs_copy_copied_1_thread": scanned / s_single / copy["copied_per_s_1_thread"],
            "scan_vs_copy_moved_1_thread": scanned / s_single / copy["moved_per_s_1_thread"],
            "scan_vs_copy_copied_2_threads": scanned / s_single / copy["copied_per_s_2_threads"],
            "scan_vs_copy_moved_2_threads": scanned / s_single / copy["moved_per_s_2_threads"],
        }
        if mode == "exact":
            exact_index = index
        del index
    row["ours_int8"] = bench_int8(n, ids, gallery, probes, want_i, want_d, exact_index, args)
    del exact_index
    if n <= 100_000:
        log(f"N={n:,}: ours: one add per template (for comparison with add_many)")
        index = TemplateIndex(DIM)
        t = time.perf_counter()
        for s, g in zip(ids, gallery, strict=True):
            index.add(s, g)
        row["ours_exact"]["add_one_by_one_s"] = time.perf_counter() - t
        del index

    log(f"N={n:,}: naive face_distance")

    def naive(p: np.ndarray) -> np.ndarray:
        d = face_recognition.face_distance(gallery, p)
        top = np.argpartition(d, k - 1)[:k]
        return top[np.argsort(d[top], kind="stable")]

    n_single, _ = timed(lambda: naive(single[0]), reps)
    naive_row: dict[str, Any] = {"single_s": n_single}
    if n <= args.naive_batch_max:
        naive_row["batch_s"], _ = timed(lambda: [naive(p) for p in probes], max(1, reps // 2))
        naive_row["batch_measured"] = True
    else:
        naive_row["batch_s"] = n_single * args.batch
        naive_row["batch_measured"] = False  # estimate: single time x batch size
    naive_i = np.array([naive(p) for p in probes[: min(args.batch, 8)]])
    naive_row["topk_first_8_probes_equal"] = bool((naive_i == want_i[: len(naive_i)]).all())
    row["naive"] = naive_row

    log(f"N={n:,}: FAISS IndexFlatL2")
    flat = faiss.IndexFlatL2(DIM)
    flat.add(gallery)
    fa: dict[str, Any] = {}
    for threads in [int(t) for t in args.faiss_threads.split(",")]:
        faiss.omp_set_num_threads(threads)
        f_single, _ = timed(lambda: flat.search(single, k), reps)
        f_batch, _ = timed(lambda: flat.search(probes, k), reps)
        dist, idx = flat.search(probes, k)
        fa[str(threads)] = {"single_s": f_single, "batch_s": f_batch,
                            "batch_topk": agreement(idx, np.sqrt(np.maximum(dist, 0)), want_i, want_d)}
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    best_single = min(fa, key=lambda t: fa[t]["single_s"])
    best_batch = min(fa, key=lambda t: fa[t]["batch_s"])
    row["faiss"] = {"by_threads": fa, "best_single_threads": int(best_single), "best_batch_threads": int(best_batch),
                    "best_single_s": fa[best_single]["single_s"], "best_batch_s": fa[best_batch]["batch_s"]}
    ours = row["ours_exact"]
    row["ratio_vs_faiss_single"] = ours["single_s"] / row["faiss"]["best_single_s"]
    row["ratio_vs_faiss_batch"] = ours["batch_s"] / row["faiss"]["best_batch_s"]
    row["ratio_vs_naive_single"] = ours["single_s"] / naive_row["single_s"]
    row["ratio_vs_naive_batch"] = ours["batch_s"] / naive_row["batch_s"]
    row["compact_ratio_vs_faiss_single"] = row["ours_compact"]["single_s"] / row["faiss"]["best_single_s"]
    row["compact_ratio_vs_faiss_batch"] = row["ours_compact"]["batch_s"] / row["faiss"]["best_batch_s"]
    log(f"N={n:,}: done (ours single {ours['single_s'] * 1e3:.1f} ms, "
         f"FAISS best {fa[best_single]['single_s'] * 1e3:.1f} ms)")
    return row


def paired(a: Callable[[], Any], b: Callable[[], Any], repeats: int) -> tuple[list[float], list[float]]:
    """Timings of ``a`` and ``b`` interleaved (a, b, a, b, ...) after one warm-up of each: the same drift."""
    a()
    b()
    ta: list[float] = []
    tb: list[float] = []
    for _ in range(repeats):
        for fn, out in ((a, ta), (b, tb)):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
    return ta, tb


# Batch sizes at which the int8 index's codes path is timed against the exact scan (its crossover).
SWEEP = (2, 4, 8, 16, 32, 48, 64)


def bench_int8(
    n: int, ids: list[str], gallery: np.ndarray, probes: np.ndarray, want_i: np.ndarray, want_d: np.ndarray,
    exact: Any, args: argparse.Namespace,
) -> dict[str, Any]:  # fmt: skip
    """:class:`biometrics.compact.CompactIndex` (int8 scan, exact re-rank) against the exact TemplateIndex,
    interleaved (exact, int8, exact, ...) so both see the same load; first-call (compile) cost reported."""
    from biometrics import compact

    k, reps = args.k, args.repeats
    t = time.perf_counter()
    compact.warm_up()  # the numba kernels: compiled, or loaded from numba's cache (first size only costs)
    first_call = time.perf_counter() - t
    log(f"N={n:,}: int8 compact: bulk add (kernels ready in {first_call:.2f} s)")
    index = compact.CompactIndex(DIM)
    t = time.perf_counter()
    index.add_many(ids, gallery)
    add_s = time.perf_counter() - t
    log(f"N={n:,}: int8 compact vs exact: searches (interleaved)")
    single = probes[0]
    e_single, c_single = paired(lambda: exact.search(single, k), lambda: index.search(single, k), reps)
    e_batch, c_batch = paired(lambda: exact.search(probes, k), lambda: index.search(probes, k), reps)
    crossover = {}  # probes -> (exact, int8 codes) seconds: where batches stop gaining from the codes
    saved = compact.EXACT_BATCH_MIN_PROBES
    compact.EXACT_BATCH_MIN_PROBES = 10**9  # the codes path at every size, for the sweep only
    try:
        for m in SWEEP:
            e_m, c_m = paired(lambda m=m: exact.search(probes[:m], k), lambda m=m: index.search(probes[:m], k), reps)
            crossover[m] = {"exact_s": statistics.median(e_m), "int8_codes_s": statistics.median(c_m)}
    finally:
        compact.EXACT_BATCH_MIN_PROBES = saved
    got_i, got_d = _ours(index, probes, k)
    one_i, one_d = _ours(index, single, k)
    exact_i, _ = _ours(exact, probes, k)
    med = statistics.median
    keep = k * 1  # one template per subject here
    sizes = [len(r) for r in compact.shortlist(index._snapshot.gallery, probes, keep)]
    return {
        "kernels_first_call_s": first_call, "add_many_s": add_s, "exact_batch_min_probes": saved,
        "crossover": crossover,
        "single_s": med(c_single), "batch_s": med(c_batch),
        "exact_single_s": med(e_single), "exact_batch_s": med(e_batch),
        "single_times_s": c_single, "batch_times_s": c_batch,
        "exact_single_times_s": e_single, "exact_batch_times_s": e_batch,
        "speedup_single": med(e_single) / med(c_single), "speedup_batch": med(e_batch) / med(c_batch),
        "nbytes": index.nbytes, "scan_nbytes": index.scan_nbytes,
        "shortlist_median": med(sizes), "shortlist_max": max(sizes),
        "single_topk": agreement(one_i, one_d, want_i[:1], want_d[:1]),
        "batch_topk": agreement(got_i, got_d, want_i, want_d),
        "batch_ids_equal_exact_index": bool((got_i == exact_i).all()),
    }


def int8_table(rows: list[dict[str, Any]]) -> str:
    """A markdown table of the int8 compact index against the exact scan, measured interleaved."""
    head = ("| N | exact single | int8 single | speedup | exact batch | int8 batch | speedup | "
            "memory exact / int8 (scanned) | shortlist median / max | top-k = float64 (s/b) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        c = r["ours_int8"]
        ms = lambda s: f"{s * 1e3:,.1f}"  # noqa: E731
        ok = lambda m: "yes" if m["equal"] else ("ties" if m["equal_ties_aside"] else "NO")  # noqa: E731
        lines.append(
            f"| {r['n']:,} | {ms(c['exact_single_s'])} | {ms(c['single_s'])} | {c['speedup_single']:.2f}x | "
            f"{ms(c['exact_batch_s'])} | {ms(c['batch_s'])} | {c['speedup_batch']:.2f}x | "
            f"{r['ours_exact']['nbytes'] / 2**20:,.1f} / {c['nbytes'] / 2**20:,.1f} "
            f"({c['scan_nbytes'] / 2**20:,.1f}) MiB | {c['shortlist_median']:.0f} / {c['shortlist_max']} | "
            f"{ok(c['single_topk'])}/{ok(c['batch_topk'])} |")
    lines.append("")
    start = rows[0]["ours_int8"]["exact_batch_min_probes"] if rows else "?"
    lines.append("Batches on the int8 codes (fused kernel below 8 probes, BLAS on codes from 8) against the exact scan "
                 f"(CompactIndex scans the float32 rows from {start} probes); ms, medians, interleaved:")
    lines.append("| N | " + " | ".join(f"{m} probes: exact / int8 codes" for m in SWEEP) + " |")
    lines.append("|---|" + "---|" * len(SWEEP))
    for r in rows:
        sweep = r["ours_int8"]["crossover"]
        lines.append(f"| {r['n']:,} | " + " | ".join(
            f"{sweep[m]['exact_s'] * 1e3:,.1f} / {sweep[m]['int8_codes_s'] * 1e3:,.1f}" for m in SWEEP)
            + " |")
    return "\n".join(lines)


def table(rows: list[dict[str, Any]], copy: dict[str, float]) -> str:
    """A markdown table of the figures (milliseconds, ratios, memory, bandwidth)."""
    head = ("| N | ours single | FAISS single (1t / 2t) | ratio | ours batch | FAISS batch (1t / 2t) | ratio | "
            "naive single | naive batch | compact single | compact batch | memory exact / compact | "
            "scan GB/s (% of copy: copied / moved) | top-k = float64 (exact s/b, compact s/b) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        e, c, f, nv = r["ours_exact"], r["ours_compact"], r["faiss"]["by_threads"], r["naive"]
        ms = lambda s: f"{s * 1e3:,.1f}"  # noqa: E731
        fs = " / ".join(ms(f[t]["single_s"]) for t in sorted(f))
        fb = " / ".join(ms(f[t]["batch_s"]) for t in sorted(f))
        bw = e["scan_bytes_per_s"]
        ok = lambda m: "yes" if m["equal"] else ("ties" if m["equal_ties_aside"] else "NO")  # noqa: E731
        nb = ms(nv["batch_s"]) + ("" if nv["batch_measured"] else " (est.)")
        lines.append(
            f"| {r['n']:,} | {ms(e['single_s'])} | {fs} | {r['ratio_vs_faiss_single']:.2f} | {ms(e['batch_s'])} | "
            f"{fb} | {r['ratio_vs_faiss_batch']:.2f} | {ms(nv['single_s'])} | {nb} | {ms(c['single_s'])} | "
            f"{ms(c['batch_s'])} | {e['nbytes'] / 2**20:,.1f} / {c['nbytes'] / 2**20:,.1f} MiB | "
            f"{bw / 1e9:.1f} ({100 * bw / copy['copied_per_s_1_thread']:.0f}% / "
            f"{100 * bw / copy['moved_per_s_1_thread']:.0f}%) | "
            f"{ok(e['single_topk'])}/{ok(e['batch_topk'])}, {ok(c['single_topk'])}/{ok(c['batch_topk'])} |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run every size, print the table, write the JSON."""
    sizes = [int(s) for s in args.sizes.split(",")]
    info = machine()
    log(f"machine: {info['cores']} cores, {info['cpu_model']}; copy bandwidth ({args.copy_gib} GiB)")
    copy = copy_bandwidth(args.copy_gib, args.repeats)
    log(f"copy: {copy['copied_per_s_1_thread'] / 1e9:.1f} GB/s copied (1 thread), "
         f"{copy['copied_per_s_2_threads'] / 1e9:.1f} GB/s copied (2 threads)")
    rows = [bench_size(n, args, copy) for n in sizes]
    info["load_average_end"] = os.getloadavg()
    result = {"command": " ".join(sys.argv), "machine": info, "copy_bandwidth": copy, "sizes": rows,
              "repeats": args.repeats, "seed": args.seed}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"copy bandwidth (np.copyto {copy['bytes'] / 2**30:.2f} GiB float32): 1 thread "
          f"{copy['copied_per_s_1_thread'] / 1e9:.1f} GB/s copied = {copy['moved_per_s_1_thread'] / 1e9:.1f} GB/s "
          f"moved; 2 threads {copy['copied_per_s_2_threads'] / 1e9:.1f} copied = "
          f"{copy['moved_per_s_2_threads'] / 1e9:.1f} moved")
    print("times in ms (medians); ratio = ours / FAISS best thread setting")
    print(table(rows, copy))
    print("int8 compact index (biometrics.compact) vs the exact scan, interleaved; times in ms (medians); "
          f"kernels ready in {rows[0]['ours_int8']['kernels_first_call_s']:.2f} s at the first call" if rows else "")
    print(int8_table(rows))
    return 0
