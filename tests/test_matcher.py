"""TemplateIndex against a float64 brute-force reference: removals, several templates per subject,
batch vs single probe, compact mode, multi-threaded scans, and no torn reads under concurrent writes."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import biometrics.matcher as matcher
from biometrics.errors import SubjectNotFound
from biometrics.matcher import TemplateIndex

DIM = 16


def brute_force(rows: np.ndarray, owners: list[str], probes: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
    """Reference: float64 distances, full sort, first k distinct owners."""
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
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert [s for s, _ in g] == [s for s, _ in w]
        np.testing.assert_allclose([d for _, d in g], [d for _, d in w], rtol=1e-9, atol=1e-9)


@pytest.fixture(params=["exact", "compact", "small-blocks", "threaded-small-blocks"])
def make_index(request, monkeypatch):
    if request.param.endswith("small-blocks"):
        monkeypatch.setattr(matcher, "PARALLEL_MIN_ROWS", 100)
        monkeypatch.setattr(matcher, "SINGLE_BLOCK_ROWS", 64)
        monkeypatch.setattr(matcher, "BLOCK_VALUES", 512)
        threads = 3 if request.param.startswith("threaded") else 1
        return lambda: TemplateIndex(DIM, threads=threads)
    return lambda: TemplateIndex(DIM, compact=request.param == "compact")


def gallery(rng: np.random.Generator, n: int, subjects: int) -> tuple[np.ndarray, list[str]]:
    rows = rng.standard_normal((n, DIM)).astype(np.float32)
    owners = [f"s{int(i)}" for i in rng.integers(0, subjects, n)]
    return rows, owners


def enrol(index: TemplateIndex, rows: np.ndarray, owners: list[str]) -> None:
    by: dict[str, list[int]] = {}
    for i, o in enumerate(owners):
        by.setdefault(o, []).append(i)
    for o, idx in by.items():
        index.add(o, rows[idx])


def test_search_equals_brute_force_with_removals(make_index):
    rng = np.random.default_rng(7)
    rows, owners = gallery(rng, 2000, 500)
    index = make_index()
    enrol(index, rows, owners)
    probes = rng.standard_normal((9, DIM)).astype(np.float32)
    assert_same(index.search(probes, 10), brute_force(rows, owners, probes, 10))
    removed = {f"s{i}" for i in range(0, 500, 3)}  # enough to trigger compaction
    for s in removed:
        index.remove(s)
    keep = [i for i, o in enumerate(owners) if o not in removed]
    kept_owners = [owners[i] for i in keep]
    assert len(index) == len(keep)
    assert index.subject_count == len(set(kept_owners))
    assert_same(index.search(probes, 10), brute_force(rows[keep], kept_owners, probes, 10))
    extra = rng.standard_normal((5, DIM)).astype(np.float32)
    index.add("new", extra)
    want = brute_force(np.vstack([rows[keep], extra]), [*kept_owners, *["new"] * 5], probes, 10)
    assert_same(index.search(probes, 10), want)


def test_batch_equals_single(make_index):
    rng = np.random.default_rng(3)
    rows, owners = gallery(rng, 1500, 300)
    index = make_index()
    enrol(index, rows, owners)
    probes = rng.standard_normal((6, DIM)).astype(np.float32)
    batch = index.search(probes, 7)
    assert batch == [index.search(p, 7)[0] for p in probes]


def test_one_subject_owning_the_top_rows(make_index):
    rng = np.random.default_rng(5)
    rows, owners = gallery(rng, 600, 600)
    probe = rng.standard_normal(DIM).astype(np.float32)
    crowd = probe + 0.001 * rng.standard_normal((300, DIM)).astype(np.float32)  # 300 nearest rows, one owner
    index = make_index()
    enrol(index, rows, owners)
    index.add("crowd", crowd)
    got = index.search(probe, 10)
    want = brute_force(np.vstack([rows, crowd]), [*owners, *["crowd"] * 300], probe[None], 10)
    assert_same(got, want)
    assert got[0][0][0] == "crowd"


def test_fewer_subjects_than_k_and_empty(make_index):
    index = make_index()
    probe = np.ones(DIM, dtype=np.float32)
    assert index.search(probe, 5) == [[]]
    index.add("a", np.zeros((3, DIM), dtype=np.float32))
    index.add("b", np.full(DIM, 2.0, dtype=np.float32))
    got = index.search(probe, 5)[0]
    assert [s for s, _ in got] == ["a", "b"]
    np.testing.assert_allclose([d for _, d in got], [4.0, 4.0])
    assert index.remove("a") == 3
    assert index.remove("a") == 0
    assert [s for s, _ in index.search(probe, 5)[0]] == ["b"]


def test_compare_templates_of_and_errors(make_index):
    rng = np.random.default_rng(11)
    index = make_index()
    t = rng.standard_normal((2, DIM)).astype(np.float32)
    index.add("alice", t)
    probe = rng.standard_normal(DIM).astype(np.float32)
    want = np.sqrt(((t.astype(np.float64) - probe) ** 2).sum(1)).min()
    assert index.compare(probe, "alice") == pytest.approx(want, rel=1e-12)
    assert index.search(probe, 1)[0][0] == ("alice", index.compare(probe, "alice"))
    np.testing.assert_array_equal(index.templates_of("alice"), t)
    assert index.templates_of("bob").shape == (0, DIM)
    assert "alice" in index and "bob" not in index
    with pytest.raises(SubjectNotFound):
        index.compare(probe, "bob")
    with pytest.raises(ValueError):
        index.add("x", np.zeros(DIM + 1, dtype=np.float32))
    with pytest.raises(ValueError):
        index.add("x", np.full(DIM, np.nan, dtype=np.float32))
    with pytest.raises(ValueError):
        index.search(np.zeros(DIM - 1, dtype=np.float32), 3)


def test_add_many_equals_adding_one_by_one(make_index):
    """Bulk add (interleaved subjects, some already enrolled) behaves exactly like one add per row."""
    rng = np.random.default_rng(19)
    rows, owners = gallery(rng, 1200, 300)
    one_by_one, bulk = make_index(), make_index()
    one_by_one.add("s0", rows[:2])
    bulk.add("s0", rows[:2])
    for row, owner in zip(rows[2:], owners[2:], strict=True):
        one_by_one.add(owner, row)
    bulk.add_many(owners[2:], rows[2:])
    assert len(bulk) == len(one_by_one) == 1200
    assert bulk.subject_count == one_by_one.subject_count
    for s in ("s0", owners[5], owners[-1]):
        np.testing.assert_array_equal(bulk.templates_of(s), one_by_one.templates_of(s))
    probes = rng.standard_normal((5, DIM)).astype(np.float32)
    want = brute_force(rows, ["s0", "s0", *owners[2:]], probes, 10)
    assert bulk.search(probes, 10) == one_by_one.search(probes, 10)
    assert_same(bulk.search(probes, 10), want)
    for s in sorted(set(owners))[::2]:
        assert bulk.remove(s) == one_by_one.remove(s)
    assert bulk.search(probes, 10) == one_by_one.search(probes, 10)
    with pytest.raises(ValueError):
        bulk.add_many(["a", "b"], rows[:3])
    bulk.add_many([], np.empty((0, DIM), dtype=np.float32))
    assert len(bulk) == len(one_by_one)


def test_compact_equals_exact_on_near_ties():
    """Rows closer together than float16 resolution: re-scoring must still give the exact order."""
    rng = np.random.default_rng(13)
    base = rng.standard_normal(DIM).astype(np.float32)
    rows = base + 1e-4 * rng.standard_normal((400, DIM)).astype(np.float32)
    owners = [f"s{i}" for i in range(400)]
    exact, compact = TemplateIndex(DIM), TemplateIndex(DIM, compact=True)
    enrol(exact, rows, owners)
    enrol(compact, rows, owners)
    probe = base + 1e-4 * rng.standard_normal(DIM).astype(np.float32)
    want = brute_force(rows, owners, probe[None], 10)
    assert_same(exact.search(probe, 10), want)
    assert_same(compact.search(probe, 10), want)
    assert compact.nbytes < exact.nbytes


def test_no_torn_reads_under_concurrent_writes(monkeypatch):
    """Writers add and remove whole subjects (4 templates each) while readers search: every result
    must come from a snapshot, so a subject is either absent or has its best of all 4 templates."""
    monkeypatch.setattr(matcher, "PARALLEL_MIN_ROWS", 200)
    monkeypatch.setattr(matcher, "SINGLE_BLOCK_ROWS", 128)
    rng = np.random.default_rng(17)
    index = TemplateIndex(DIM, threads=2)
    base_rows, base_owners = gallery(rng, 1000, 250)
    enrol(index, base_rows, base_owners)
    probe = rng.standard_normal(DIM).astype(np.float32)
    # Each transient subject's 4 templates: one very near the probe, three far; the near one decides.
    transient = {
        f"t{i}": np.vstack([probe + 0.01 * (i + 1), rng.standard_normal((3, DIM)) + 10]).astype(np.float32)
        for i in range(20)
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
        for _ in range(150):
            for s, d in index.search(probe, 30)[0]:
                if s.startswith("t") and abs(d - best[s]) > 1e-9:
                    errors.append(f"{s}: {d} != {best[s]}")

    names = sorted(transient)
    writers = [threading.Thread(target=writer, args=(names[i::2],)) for i in range(2)]
    readers = [threading.Thread(target=reader) for _ in range(3)]
    for t in writers + readers:
        t.start()
    for t in readers:
        t.join()
    stop.set()
    for t in writers:
        t.join()
    assert not errors, errors[:5]
    assert len(index) == 1000
    assert_same(index.search(probe, 10), brute_force(base_rows, base_owners, probe[None], 10))


def test_a_bulk_load_of_new_subjects_equals_adding_them_one_by_one() -> None:
    rng = np.random.default_rng(7)
    rows = rng.standard_normal((500, 128)).astype(np.float32)
    ids = [f"S{i:04d}" for i in range(500)]
    bulk, single = TemplateIndex(128), TemplateIndex(128)
    bulk.add_many(ids[:300], rows[:300])  # the fast path: new, distinct ids
    bulk.add_many(ids[300:], rows[300:])
    for subject_id, row in zip(ids, rows, strict=True):
        single.add(subject_id, row)
    bulk.add("S0007", rows[9])  # a second template for an existing subject, then a removal
    single.add("S0007", rows[9])
    assert bulk.remove("S0100") == single.remove("S0100") == 1
    probes = rng.standard_normal((5, 128)).astype(np.float32)
    assert bulk.search(probes, 10) == single.search(probes, 10)
    assert (len(bulk), bulk.subject_count) == (len(single), single.subject_count) == (500, 499)
    assert bulk.compare(rows[9], "S0007") == pytest.approx(0.0, abs=1e-5)


class _Colliding(str):
    """A subject id whose hash() is the same as every other's: the table must tell them apart by their text."""

    def __hash__(self) -> int:
        return 12345


@pytest.mark.parametrize("ids", ["plain", "colliding"])
def test_the_subject_table_follows_a_dictionary_through_random_writes(ids) -> None:
    """SubjectTable (ids, codes and rows in numpy arrays) against a dict model: appends of new and known ids
    (bulk, repeated ids in one call, several rows a subject), removals, re-enrolment, remapping after a
    compaction; ids with one hash for all (linear probing, the name check) as well as ordinary ones."""
    from biometrics.subject_table import SubjectTable

    rng = np.random.default_rng(7)
    make = _Colliding if ids == "colliding" else str
    names = [make(f"subject-{i}-é") for i in range(60 if ids == "colliding" else 3000)]
    table, model, next_row = SubjectTable(), {}, 0
    for step in range(300):
        if rng.random() < 0.7:
            batch = [names[i] for i in rng.integers(0, len(names), size=int(rng.integers(1, 40)))]
            codes = table.append(batch, next_row)
            for j, s in enumerate(batch):
                model.setdefault(str(s), []).append(next_row + j)
                assert table.name(int(codes[j])) == s
            next_row += len(batch)
        elif model:
            s = names[int(rng.integers(0, len(names)))]
            assert table.remove(s) == model.pop(str(s), [])
        if step % 50 == 49:  # a compaction: rows of subjects held move down, in order
            held = sorted(r for rows in model.values() for r in rows)
            new_row = np.full(next_row, -1, dtype=np.int64)
            new_row[held] = np.arange(len(held))
            table.remap(new_row)
            model = {s: [int(new_row[r]) for r in rows] for s, rows in model.items()}
            next_row = len(held)
        assert len(table) == len(model)
        for s in names[:80]:
            assert (s in table) == (str(s) in model)
            assert table.rows_of(s) == model.get(str(s), [])
        assert table.most_rows == max(map(len, model.values()), default=0)


def test_the_subject_table_costs_under_100_bytes_a_subject() -> None:
    """The point of the table: a million subjects in tens of MB, not the ~390 MB of a dict of objects."""
    from biometrics.subject_table import SubjectTable

    table = SubjectTable()
    table.append([f"t{i:09d}" for i in range(1_000_000)], 0)
    assert table.nbytes < 100 * 1_000_000
    assert table.code_of("t000999999") == 999_999 and table.rows_of("t000123456") == [123456]
