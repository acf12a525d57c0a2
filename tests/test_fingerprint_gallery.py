"""The service's fingerprint gallery: changes cost their own size, searches see whole changes only and score
exactly as the gallery that repacked everything (``RepackingGallery``, the code before commit 49d205d)."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import biometrics.fingerprint as fp
from benchmarks.fingerprint_speed import RepackingGallery, synthetic_templates
from biometrics.fingerprint import gallery as gallery_module
from biometrics.fingerprint.gallery import FingerprintGallery
from biometrics.scores import ScoreCalibration

DATA = Path(__file__).parent / "data" / "fingerprints"
NAMES = ["DB1_B_101_1", "DB1_B_101_2", "DB1_B_101_3", "DB1_B_102_1", "DB1_B_103_1", "DB3_B_101_1"]
CALIBRATION = ScoreCalibration.for_modality("fingerprint")

Content = dict[str, list[tuple[int, fp.FingerprintTemplate]]]


@pytest.fixture(scope="module")
def real() -> list[fp.FingerprintTemplate]:
    return [fp.extract_fingerprint(np.array(Image.open(DATA / f"{n}.png").convert("L"))) for n in NAMES]


@pytest.fixture(scope="module")
def pool(real) -> list[fp.FingerprintTemplate]:
    return synthetic_templates(real, 400, seed=7)


@pytest.fixture(scope="module")
def probes(real) -> list[tuple[int, fp.FingerprintTemplate]]:
    # unknown position, two probes of one position (best of both), and a position of its own
    return [(0, real[0]), (1, real[1]), (1, real[3]), (2, real[5])]


@pytest.fixture
def small_buffers(monkeypatch):
    """Tiny initial capacities, so that a few dozen templates grow the buffers several times."""
    monkeypatch.setattr(gallery_module, "MIN_TEMPLATES", 2)
    monkeypatch.setattr(gallery_module, "MIN_CYLINDERS", 16)


def random_changes(pool, steps: int, seed: int) -> list[tuple[str, str, list]]:
    """("add", subject, entries) / ("remove", subject, []): new subjects, more templates for enrolled ones,
    removals of enrolled and of unknown subjects, re-enrolment of removed ids."""
    rng = np.random.default_rng(seed)
    ops: list[tuple[str, str, list]] = []
    enrolled: list[str] = []
    removed: list[str] = []
    k = 0
    for step in range(steps):
        roll = rng.random()
        if enrolled and roll < 0.3:
            subject = enrolled.pop(int(rng.integers(len(enrolled))))
            removed.append(subject)
            ops.append(("remove", subject, []))
        elif roll < 0.33:
            ops.append(("remove", f"unknown-{step}", []))
        else:
            if enrolled and roll < 0.45:
                subject = enrolled[int(rng.integers(len(enrolled)))]
            elif removed and roll < 0.55:
                subject = removed.pop(int(rng.integers(len(removed))))
                enrolled.append(subject)
            else:
                subject = f"subject-{step}"
                enrolled.append(subject)
            m = int(rng.integers(1, 4))
            ops.append(("add", subject, [(int(rng.integers(0, 4)), pool[(k + i) % len(pool)]) for i in range(m)]))
            k += m
    return ops


def apply(gallery, content: Content, op: tuple[str, str, list]) -> None:
    kind, subject, entries = op
    if kind == "add":
        gallery.add(subject, entries)
        content.setdefault(subject, []).extend(entries)
    else:
        gallery.remove(subject)
        content.pop(subject, None)


def built_from(cls, content: Content):
    gallery = cls(CALIBRATION)
    for subject, entries in content.items():
        gallery.add(subject, entries)
    return gallery


def test_random_changes_score_exactly_as_a_gallery_repacked_from_the_final_content(pool, probes, small_buffers):
    gallery = FingerprintGallery(CALIBRATION)
    content: Content = {}
    ops = random_changes(pool, 300, seed=1)
    assert sum(op[0] == "remove" for op in ops) > 60
    for i, op in enumerate(ops):
        apply(gallery, content, op)
        if i % 50 == 49 or i == len(ops) - 1:
            expected = built_from(RepackingGallery, content).search(probes)
            assert expected, "the probes should reach some subjects"
            assert gallery.search(probes) == expected
            assert built_from(FingerprintGallery, content).search(probes) == expected
            assert len(gallery) == sum(len(v) for v in content.values())
            assert all(subject in gallery for subject in content)
            assert not any(op[1] in gallery for op in ops if op[1] not in content)
    fresh = built_from(FingerprintGallery, content)
    for subject in list(content)[:10]:
        assert gallery.compare(subject, probes) == fresh.compare(subject, probes)
    assert gallery.compare("unknown", probes) == []
    # removing everyone leaves an empty gallery that still takes subjects
    for subject in list(content):
        gallery.remove(subject)
    assert gallery.search(probes) == {} and len(gallery) == 0
    gallery.add("again", [(1, pool[0])])
    reference = RepackingGallery(CALIBRATION)
    reference.add("again", [(1, pool[0])])
    assert gallery.search(probes) == reference.search(probes)


def test_add_many_is_the_same_as_adding_one_by_one(pool, probes, small_buffers):
    batch = [("a", [(1, pool[0]), (2, pool[1])]), ("b", [(1, pool[2])]), ("a", [(0, pool[3])]), ("c", [])]
    one_by_one = FingerprintGallery(CALIBRATION)
    one_by_one.add("a", [(1, pool[4])])
    for subject, entries in batch:
        one_by_one.add(subject, entries)
    bulk = FingerprintGallery(CALIBRATION)
    bulk.add("a", [(1, pool[4])])
    bulk.add_many(batch)
    assert bulk.search(probes) == one_by_one.search(probes)
    assert len(bulk) == len(one_by_one) == 5
    assert "c" not in bulk


class CountedTemplate(fp.FingerprintTemplate):
    """A template that counts how often its cylinders are read out (as a repack of the gallery does)."""

    reads = 0

    def cylinder_geometry(self):
        CountedTemplate.reads += 1
        return super().cylinder_geometry()


def counted(t: fp.FingerprintTemplate) -> CountedTemplate:
    return CountedTemplate(**{f.name: getattr(t, f.name) for f in dataclasses.fields(t)})


def test_a_change_and_the_search_after_it_never_touch_the_rest_of_the_gallery(pool, probes):
    gallery = FingerprintGallery(CALIBRATION)
    enrolled = [counted(t) for t in pool[:60]]
    for i in range(0, 60, 2):
        gallery.add(f"s{i}", [(1, enrolled[i]), (2, enrolled[i + 1])])
    gallery.search(probes)
    CountedTemplate.reads = 0
    gallery.add("newcomer", [(1, counted(pool[100])), (2, counted(pool[101]))])
    gallery.search(probes)
    assert CountedTemplate.reads == 2, "an enrolment and the search after it read the newcomer's templates only"
    for i in range(0, 12, 2):  # up to a fifth of the rows removed: tombstones, no rebuild yet
        gallery.remove(f"s{i}")
        gallery.search(probes)
    assert CountedTemplate.reads == 2


def test_buffers_grow_geometrically_and_removals_are_compacted(pool, small_buffers):
    gallery = FingerprintGallery(CALIBRATION)
    buffers = []
    for i in range(300):
        gallery.add(f"s{i}", [(1, pool[i])])
        snapshot = gallery._snapshot
        if not buffers or buffers[-1] is not snapshot.bits.base:
            buffers.append(snapshot.bits.base)
    # 2 -> 300 templates by 1.5x: about a dozen buffers (cylinders grow the same way), not one per add
    assert len(buffers) <= 2 * int(np.log(300 / 2) / np.log(1.5) + 2)
    for i in range(0, 300, 3):
        gallery.remove(f"s{i}")
    assert gallery._snapshot.n <= 1.25 * len(gallery) + 1, "dead rows are dropped once a quarter are dead"
    assert len(gallery) == 200


def test_bad_entries_are_refused_and_leave_the_gallery_unchanged(pool, probes):
    gallery = FingerprintGallery(CALIBRATION)
    gallery.add("a", [(1, pool[0])])
    before = gallery.search(probes)
    with pytest.raises(TypeError, match="FingerprintTemplate"):
        gallery.add("b", [(1, pool[1]), (2, b"not a template")])
    with pytest.raises(ValueError):
        gallery.add("b", [("thumb", pool[1])])
    assert "b" not in gallery and len(gallery) == 1
    assert gallery.search(probes) == before


def matches_in_order(results: list[dict], states: list[dict]) -> bool:
    """Every result is one of the states, and the states they are go forward only."""
    lowest = 0
    for result in results:
        later = [i for i, state in enumerate(states) if i >= lowest and state == result]
        if not later:
            return False
        lowest = later[0]
    return True


@pytest.mark.slow
def test_searches_running_during_changes_see_whole_changes_in_order(pool, probes, small_buffers):
    probes = probes[:2]
    ops = random_changes(pool, 80, seed=3)
    content: Content = {}
    reference = RepackingGallery(CALIBRATION)
    states = [reference.search(probes)]
    for op in ops:
        apply(reference, content, op)
        states.append(reference.search(probes))
    # a half-applied change would give a result between two of these (subjects have 1-3 templates)
    assert len({repr(s) for s in states}) > len(ops) // 2

    gallery = FingerprintGallery(CALIBRATION)
    results: list[list[dict]] = [[], []]
    errors: list[BaseException] = []
    done = threading.Event()
    searched = threading.Condition()

    def searcher(mine: list[dict]) -> None:
        try:
            while not done.is_set():
                result = gallery.search(probes)
                with searched:
                    mine.append(result)
                    searched.notify_all()
        except BaseException as exc:  # reported by the test
            errors.append(exc)
            with searched:
                searched.notify_all()

    def searches() -> int:
        return sum(len(r) for r in results)

    threads = [threading.Thread(target=searcher, args=(r,)) for r in results]
    for t in threads:
        t.start()
    try:
        for kind, subject, entries in ops:
            # wait for one more search to finish, so that the next ones start on this state and run under the change
            deadline = time.monotonic() + 30
            with searched:
                seen = searches()
                while searches() == seen and not errors:
                    remaining = deadline - time.monotonic()
                    assert remaining > 0, "no search finished within 30 s"
                    searched.wait(remaining)
            if kind == "add":
                gallery.add(subject, entries)
            else:
                gallery.remove(subject)
    finally:
        done.set()
        for t in threads:
            t.join(timeout=60)
    assert not errors, errors
    assert searches() >= len(ops)
    for mine in results:
        assert matches_in_order(mine, states)
    assert gallery.search(probes) == states[-1]
