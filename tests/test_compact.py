"""CompactIndex (int8 scan, proven shortlist, float64 re-rank) against a float64 brute force: random and
adversarial galleries (near-ties below the int8 resolution, duplicates, equidistant crowds, mixed norms),
both scan paths (fused kernel, BLAS batch), removals, the shortlist's superset guarantee, snapshots."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import biometrics.compact as compact
from biometrics.compact import CompactIndex, quantise, shortlist
from biometrics.errors import SubjectNotFound
from biometrics.matcher import TemplateIndex

DIM = 32


def brute_force(rows: np.ndarray, owners: list[str], probes: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
    """Reference: float64 distances of the float32 rows, stable sort (ties to the lower row), first k owners."""
    d = np.sqrt(((rows.astype(np.float64)[None] - probes.astype(np.float64)[:, None]) ** 2).sum(-1))
    out = []
    for row in d:
        best: dict[str, float] = {}
        for i in np.argsort(row, kind="stable"):
            best.setdefault(owners[i], float(row[i]))
            if len(best) == k:
                break
        out.append(list(best.items()))
    return out


def assert_same(got: list, want: list) -> None:
    """Same subjects in the same order; distances equal to float64 rounding of the same float32 rows."""
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert [s for s, _ in g] == [s for s, _ in w]
        np.testing.assert_allclose([d for _, d in g], [d for _, d in w], rtol=1e-12, atol=1e-12)


@pytest.fixture(params=["fused", "fused-threaded", "blas", "float32-batch"])
def path(request, monkeypatch):
    """Force each scan path on small galleries: one thread, rows split over threads, the BLAS batch of codes, and
    the exact float32 scan of the rows kept for the re-rank (what batches use)."""
    if request.param == "fused-threaded":
        monkeypatch.setattr(compact, "PARALLEL_MIN_ROWS", 64)
    monkeypatch.setattr(compact, "EXACT_BATCH_MIN_PROBES", 1 if request.param == "float32-batch" else 10**9)
    monkeypatch.setattr(compact, "BATCH_MIN_PROBES", 1 if request.param == "blas" else 10**9)
    monkeypatch.setattr(compact, "BATCH_BLOCK_VALUES", 1024)  # several blocks even on small galleries
    return request.param


def make(rows: np.ndarray, owners: list[str], threads: int = 3) -> CompactIndex:
    index = CompactIndex(rows.shape[1], threads=threads)
    index.add_many(owners, rows)
    return index


def check(rows: np.ndarray, owners: list[str], probes: np.ndarray, k: int) -> list:
    got = make(rows, owners).search(probes, k)
    assert_same(got, brute_force(rows, owners, probes, k))
    return got


def test_random_gallery_equals_brute_force(path):
    rng = np.random.default_rng(1)
    rows = rng.standard_normal((3000, DIM)).astype(np.float32)
    owners = [f"s{i}" for i in rng.integers(0, 900, len(rows))]  # several templates per subject
    probes = rng.standard_normal((7, DIM)).astype(np.float32)
    for k in (1, 10, 50):
        check(rows, owners, probes, k)
    check(rows, owners, rows[:5] + 1e-3, 10)  # probes next to enrolled rows


def test_near_ties_below_the_int8_resolution(path):
    """400 rows within 1e-6 of one point (int8 steps are ~1e-2 here): only the exact re-rank can order them."""
    rng = np.random.default_rng(2)
    base = rng.standard_normal(DIM).astype(np.float32)
    rows = (base + 1e-6 * rng.standard_normal((400, DIM))).astype(np.float32)
    others = rng.standard_normal((2000, DIM)).astype(np.float32)
    rows = np.vstack([others[:1000], rows, others[1000:]])
    owners = [f"s{i}" for i in range(len(rows))]
    probes = (base + 1e-6 * rng.standard_normal((3, DIM))).astype(np.float32)
    got = check(rows, owners, probes, 10)
    assert all(1000 <= int(s[1:]) < 1400 for r in got for s, _ in r)


def test_duplicates_tie_to_the_lower_row(path):
    """The same template enrolled under many subjects: equal distances, order by row as the exact search."""
    rng = np.random.default_rng(3)
    rows = rng.standard_normal((1500, DIM)).astype(np.float32)
    twin = rows[700].copy()
    for i in (5, 99, 700, 701, 1200, 1499):
        rows[i] = twin
    owners = [f"s{i}" for i in range(len(rows))]
    got = check(rows, owners, (twin + 0.01)[None], 10)
    assert [s for s, _ in got[0][:6]] == ["s5", "s99", "s700", "s701", "s1200", "s1499"]
    assert len({d for _, d in got[0][:6]}) == 1


def test_equidistant_crowd_grows_the_candidate_buffers(path):
    """3,000 rows at the same distance from the probe (a sphere around it): every one is within the bound,
    far more than the first candidate buffers hold; the top 10 is decided by float64 rounding and row order."""
    rng = np.random.default_rng(4)
    probe = rng.standard_normal(DIM).astype(np.float32)
    directions = rng.standard_normal((3000, DIM))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    crowd = (probe + 0.5 * directions).astype(np.float32)
    far = (probe + 5.0 * rng.standard_normal((1000, DIM))).astype(np.float32)
    rows = np.vstack([far[:500], crowd, far[500:]])
    owners = [f"s{i}" for i in range(len(rows))]
    check(rows, owners, probe[None], 10)
    index = make(rows, owners)
    found = shortlist(index._snapshot.gallery, probe[None], 10)[0]
    assert len(found) > 4 * 10 + 64  # more than the first buffers held: the growth path ran


def test_mixed_norms_and_zero_rows(path):
    """Per-template scales: templates of very different sizes, zero templates, a zero probe."""
    rng = np.random.default_rng(5)
    rows = rng.standard_normal((2000, DIM)).astype(np.float32)
    rows *= rng.choice([1e-3, 1.0, 30.0, 1e3], size=(len(rows), 1)).astype(np.float32)
    rows[::97] = 0.0
    rows[50, 3] = 1e4  # one coordinate dominates its template's scale
    owners = [f"s{i}" for i in rng.integers(0, 1500, len(rows))]
    probes = np.vstack([rng.standard_normal((4, DIM)), np.zeros((1, DIM)), 1e-3 * rng.standard_normal((1, DIM))])
    check(rows, owners, probes.astype(np.float32), 10)


def test_one_subject_owning_the_top_rows(path):
    rng = np.random.default_rng(6)
    rows = rng.standard_normal((1000, DIM)).astype(np.float32)
    probe = rng.standard_normal(DIM).astype(np.float32)
    crowd = (probe + 1e-3 * rng.standard_normal((300, DIM))).astype(np.float32)
    got = check(np.vstack([rows, crowd]), [*(f"s{i}" for i in range(1000)), *["crowd"] * 300], probe[None], 10)
    assert got[0][0][0] == "crowd"


def test_removals_compaction_and_readds(path):
    rng = np.random.default_rng(7)
    rows = rng.standard_normal((2400, DIM)).astype(np.float32)
    owners = [f"s{i}" for i in rng.integers(0, 600, len(rows))]
    probes = rng.standard_normal((5, DIM)).astype(np.float32)
    index = make(rows, owners)
    # remove the subjects nearest the probes first (their rows must never come back), then a third of all
    removed = {s for r in brute_force(rows, owners, probes, 3) for s, _ in r} | {f"s{i}" for i in range(0, 600, 3)}
    for s in sorted(removed):
        index.remove(s)
    keep = [i for i, o in enumerate(owners) if o not in removed]
    kept = [owners[i] for i in keep]
    assert len(index) == len(keep) and index.subject_count == len(set(kept))
    assert_same(index.search(probes, 10), brute_force(rows[keep], kept, probes, 10))
    index.add("back", probes[0] + 1e-4)
    want = brute_force(np.vstack([rows[keep], probes[:1] + 1e-4]), [*kept, "back"], probes, 10)
    assert_same(index.search(probes, 10), want)
    assert index.search(probes[0], 1)[0][0][0] == "back"


def test_same_results_as_template_index(path):
    """The drop-in contract: identical lists (ids, order, distances) to TemplateIndex's exact search."""
    rng = np.random.default_rng(8)
    rows = rng.standard_normal((2500, DIM)).astype(np.float32)
    owners = [f"s{i}" for i in rng.integers(0, 800, len(rows))]
    exact = TemplateIndex(DIM)
    exact.add_many(owners, rows)
    probes = rng.standard_normal((9, DIM)).astype(np.float32)
    assert make(rows, owners).search(probes, 10) == exact.search(probes, 10)


def test_shortlist_holds_every_row_that_can_be_among_the_nearest():
    """Rows tied with the keep-th nearest are in the shortlist too, and no removed row ever is."""
    rng = np.random.default_rng(9)
    rows = rng.standard_normal((3000, DIM)).astype(np.float32)
    rows[1000:1020] = rows[7]  # 21 copies of one row: ties at whatever rank it has
    gallery = quantise(rows)
    probes = rng.standard_normal((4, DIM)).astype(np.float32)
    probes[0] = rows[7] + 0.05
    for keep in (1, 5, 40):
        found = shortlist(gallery, probes, keep)
        for p, rows_found in enumerate(found):
            d = ((rows.astype(np.float64) - probes[p].astype(np.float64)) ** 2).sum(1)
            kth = np.partition(d, keep - 1)[keep - 1]
            assert set(np.flatnonzero(d <= kth)) <= set(rows_found.tolist())
    dead = quantise(rows)
    dead.norms[7] = np.inf
    dead.norms[1000:1020] = np.inf
    assert not {7, *range(1000, 1020)} & set(shortlist(dead, probes[:1], 5)[0].tolist())


def test_quantisation_bounds_hold():
    """|g.q - s t (c.d)| <= e |q| + |s c| e_q for every row and probe (the inequality the proof uses)."""
    rng = np.random.default_rng(10)
    rows = (rng.standard_normal((500, DIM)) * rng.choice([1e-2, 1, 1e2], (500, 1))).astype(np.float32)
    g, q = quantise(rows), quantise(rows[:20] + 0.3)
    exact = rows.astype(np.float64) @ (rows[:20] + 0.3).astype(np.float32).astype(np.float64).T
    approx = (g.codes.astype(np.float64) * g.scales[:, None]) @ (q.codes.astype(np.float64) * q.scales[:, None]).T
    qn = np.linalg.norm((rows[:20] + 0.3).astype(np.float32).astype(np.float64), axis=1)
    bound = g.errors[:, None].astype(np.float64) * qn[None] + g.code_norms[:, None] * q.errors[None].astype(np.float64)
    assert (np.abs(exact - approx) <= bound).all()
    assert np.abs(g.codes).max() <= 127
    assert (g.errors > 0).any() and (g.errors < 0.01 * np.sqrt(g.norms.astype(np.float64)) + 1e-30).all()


def test_contract_compare_templates_of_errors():
    rng = np.random.default_rng(11)
    index = CompactIndex(DIM)
    probe = np.ones(DIM, dtype=np.float32)
    assert index.search(probe, 5) == [[]]
    t = rng.standard_normal((2, DIM)).astype(np.float32)
    index.add("alice", t)
    want = float(np.sqrt(((t.astype(np.float64) - probe) ** 2).sum(1)).min())
    assert index.compare(probe, "alice") == pytest.approx(want, rel=1e-12)
    assert index.search(probe, 3) == [[("alice", index.compare(probe, "alice"))]]
    assert index.search(probe, 0) == [[]]
    np.testing.assert_array_equal(index.templates_of("alice"), t)
    assert index.templates_of("bob").shape == (0, DIM)
    assert "alice" in index and "bob" not in index
    with pytest.raises(SubjectNotFound):
        index.compare(probe, "bob")
    for bad in (np.zeros(DIM + 1), np.full(DIM, np.nan), np.full(DIM, np.inf)):
        with pytest.raises(ValueError):
            index.add("x", bad)
        with pytest.raises(ValueError):
            index.search(bad, 3)
    with pytest.raises(ValueError, match="too large"):
        index.add("x", np.full(DIM, 1e30, dtype=np.float32))
    with pytest.raises(ValueError):
        index.add_many(["a", "b"], t[:1])
    with pytest.raises(ValueError):
        CompactIndex(compact.MAX_DIM + 1)
    assert index.remove("alice") == 2 and index.remove("alice") == 0
    assert index.search(probe, 3) == [[]] and len(index) == 0


def test_searches_see_whole_writes(monkeypatch):
    """Writers add and remove whole subjects (4 templates: one near the probe) while readers search:
    each result comes from one snapshot, so a subject present has its best template's distance."""
    monkeypatch.setattr(compact, "PARALLEL_MIN_ROWS", 256)
    rng = np.random.default_rng(12)
    rows = rng.standard_normal((1500, DIM)).astype(np.float32)
    owners = [f"s{i}" for i in range(len(rows))]
    index = make(rows, owners, threads=2)
    probe = rng.standard_normal(DIM).astype(np.float32)
    transient = {
        f"t{i}": np.vstack([probe + 0.01 * (i + 1), rng.standard_normal((3, DIM)) + 10]).astype(np.float32)
        for i in range(16)
    }
    best = {s: float(np.sqrt(((t.astype(np.float64) - probe) ** 2).sum(1)).min()) for s, t in transient.items()}
    stop = threading.Event()
    errors: list[str] = []

    def writer(names: list[str]) -> None:
        while not stop.is_set():
            for s in names:
                index.add(s, transient[s])
            for s in names:
                index.remove(s)

    def reader() -> None:
        for _ in range(100):
            for s, d in index.search(probe, 30)[0]:
                if s.startswith("t") and abs(d - best[s]) > 1e-9:
                    errors.append(f"{s}: {d} != {best[s]}")

    names = sorted(transient)
    writers = [threading.Thread(target=writer, args=(names[i::2],)) for i in range(2)]
    readers = [threading.Thread(target=reader) for _ in range(2)]
    for t in writers + readers:
        t.start()
    for t in readers:
        t.join()
    stop.set()
    for t in writers:
        t.join()
    assert not errors, errors[:5]
    assert_same(index.search(probe, 10), brute_force(rows, owners, probe[None], 10))


@pytest.mark.bench
@pytest.mark.slow
def test_matcher_bench_reports_the_int8_index(tmp_path, capsys):
    """checkpoint-bench matcher measures the int8 index beside the others, same data, top-k checked."""
    import json

    from benchmarks.cli import main

    out = tmp_path / "matcher.json"
    assert main(["matcher", "--sizes", "3000", "--repeats", "1", "--batch", "16", "--json", str(out)]) == 0
    row = json.loads(out.read_text())["sizes"][0]
    int8 = row["ours_int8"]
    assert int8["single_topk"]["equal"] and int8["batch_topk"]["equal"] and int8["batch_ids_equal_exact_index"]
    assert int8["single_s"] > 0 and int8["exact_batch_s"] > 0 and int8["kernels_first_call_s"] >= 0
    assert int8["speedup_single"] == pytest.approx(int8["exact_single_s"] / int8["single_s"])
    assert row["ours_exact"]["single_topk"]["equal"]  # the existing figures are still there
    printed = capsys.readouterr().out
    assert "int8 compact index" in printed and "| 3,000 |" in printed


def test_a_service_with_the_compact_face_index_answers_as_the_exact_one(tmp_path) -> None:
    """--face-index compact: the station's Identify and enrolment duplicate search give the exact index's answers."""
    from biometrics.face import FaceBox, FaceTemplate
    from biometrics.service import CheckpointService, StoreLocation
    from biometrics.shard_loader import face_index_for
    from biometrics.types import Modality, Sample, SubjectInfo

    class TemplateAsImage:
        def extract_face(self, image, purpose="probe"):
            return FaceTemplate(np.asarray(image, dtype=np.float32), FaceBox(0, 1, 1, 0, 1.0, "test"), 90.0)

    rng = np.random.default_rng(5)
    centres = rng.standard_normal((30, 128)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    services = {kind: CheckpointService.open(
        StoreLocation(tmp_path / kind, key_dir=tmp_path / f"{kind}-keys"), extractor=TemplateAsImage(),
        face_index=face_index_for("memory", kind=kind)) for kind in ("exact", "compact")}
    try:
        assert isinstance(services["compact"].face_index, CompactIndex)
        for i, c in enumerate(centres):  # pairs of near-duplicates, enrolled with an override
            for j in range(2):
                t = c + 0.1 * rng.standard_normal(128).astype(np.float32) / np.sqrt(128)
                for service in services.values():
                    assert service.enrol(f"S{i:02d}{j}", SubjectInfo(name="x"), [Sample(Modality.FACE, t)],
                                         allow_duplicate=True, override_reason="pair").enrolled
        probes = np.vstack([centres + 0.15 * rng.standard_normal((30, 128)).astype(np.float32) / np.sqrt(128),
                            rng.standard_normal((5, 128)).astype(np.float32)])
        hits = 0
        for p in probes:
            want = services["exact"].identify([Sample(Modality.FACE, p)]).candidates
            assert services["compact"].identify([Sample(Modality.FACE, p)]).candidates == want
            assert services["compact"].screen([p], [], False)[:3] == services["exact"].screen([p], [], False)[:3]
            hits += len(want)
        assert hits >= 60
    finally:
        for service in services.values():
            service.close()
