"""Portal pages over a simulated year: render time per page (p50/p95) against a 300 ms target, and screenshots.

Usage::

    flock -x /tmp/checkpoint-bench.lock checkpoint-bench portal --decisions 2050000 --renders 40 \\
        --out results/portal [--screenshots docs/img]

1. A SYNTHETIC year from :mod:`benchmarks.traffic` (``--decisions``, seeded) is written into a fresh SQLite
   store (``--store`` to reuse one: it is then only read); the load rate is printed.
2. ``checkpoint-portal`` is started on it (a real process, uvicorn on 127.0.0.1). At start it protects and
   releases the days and months its default pages show in a warm-up thread (``portal.app.warm_up``), all of
   them on a fresh state directory (the first start of a portal), reading them back on a kept one
   (``--state-dir``: a restart). The start is reported apart: ``/`` fetched as soon as the server answers
   (the first visitor, during the warm-up) and the warm-up's duration (from its log line). Then each page is
   fetched ``--renders`` times over HTTP, the first fetch of each page reported apart (cold: it fills the
   caches of days that are over). Each page's p50/p95 is printed with the ratio to a baseline measured in the
   same run: the static style sheet, which exercises the same server and HTTP path without any figure.
3. With ``--screenshots DIR``, Debian's chromium (through chromium-driver) takes ``portal-*.png`` of the
   pages in both languages, with every request outside 127.0.0.1 refused.

Writes ``report.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks._util import free_port

COMMAND = "portal"
TARGET_P95_MS = 300.0
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

#: Pages measured (path and query), the auditors' pages excluded (they are not public).
PAGES = (
    "/", "/today", "/today?station=tuapejat-port&lang=en", "/arrivals", "/arrivals?station=rokot-airport&lang=en",
    "/seasonal", "/seasonal?station=siberut-port", "/satisfaction", "/method", "/data",
    "/data/hourly?format=csv", "/data/arrivals_nationality?format=json", "/data/seasonal?format=csv",
)
SCREENSHOTS = (
    ("portal-home-id.png", "/?lang=id"), ("portal-today-en.png", "/today?station=tuapejat-port&lang=en"),
    ("portal-today-id.png", "/today?station=rokot-airport&lang=id"), ("portal-arrivals-en.png", "/arrivals?lang=en"),
    ("portal-seasonal-en.png", "/seasonal?lang=en"), ("portal-satisfaction-id.png", "/satisfaction?lang=id"),
    ("portal-data-en.png", "/data?lang=en"), ("portal-error-400-en.png", "/today?date=2026-02-30&lang=en"),
)


@contextlib.contextmanager
def portal_process(store: str, port: int, extra: list[str] | None = None, log: Path | None = None,
                   state_dir: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """``checkpoint-portal`` on 127.0.0.1:``port`` over ``store``, until it answers; stopped on exit.

    Its releases go to ``state_dir`` (default: a temporary directory removed on exit, never the user's own).
    """
    exe = Path(sys.executable).with_name("checkpoint-portal")
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    temporary = None if state_dir else tempfile.TemporaryDirectory(prefix="portal-state-")
    state = state_dir or Path(temporary.name)  # type: ignore[union-attr]
    proc = subprocess.Popen([str(exe), "--store", store, "--listen", f"127.0.0.1:{port}", "--state-dir", str(state),
                             *(extra or [])], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/static/portal.css", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"checkpoint-portal did not start (exit {proc.poll()})") from None
                time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log:
            out.close()  # type: ignore[union-attr]
        if temporary:
            temporary.cleanup()


def wait_for_warm_up(proc: subprocess.Popen[bytes], log: Path, timeout: float = 900.0) -> float:
    """Seconds the portal's warm-up took, read from its log line (the portal started with ``--log-level info``
    and its output in ``log``); RuntimeError when it exits, skips the warm-up or does not finish in time."""
    from portal.app import WARM_UP_DONE

    deadline = time.monotonic() + timeout
    while True:
        text = log.read_text(errors="replace")
        for line in text.splitlines():
            if WARM_UP_DONE in line:
                return float(line.split(WARM_UP_DONE, 1)[1].split()[0])
            if "warm-up skipped" in line:
                raise RuntimeError(f"checkpoint-portal: {line.strip()}")
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"checkpoint-portal's warm-up did not finish (exit {proc.poll()}); see {log}")
        time.sleep(0.1)


def chromium(width: int = 1280, height: int = 1000) -> Any:
    """Headless Debian chromium through chromium-driver, every host but 127.0.0.1 unresolvable, with the
    performance log on (to list every URL the page requested)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:
        raise RuntimeError(f"{', '.join(missing)} missing: `apt-get install chromium chromium-driver` "
                           "(scripts/bootstrap does it as root)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-default-apps", "--disable-extensions", "--lang=en-GB",
                "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=127.0.0.1"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))


def requested_urls(driver: Any) -> list[str]:
    """Every URL the browser asked for since the last call (from the performance log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def full_page_screenshot(driver: Any, path: Path) -> None:
    """The whole page (the window grown to the page's height) as a PNG."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(height + 40, 600), 4000))
    driver.save_screenshot(str(path))
    driver.set_window_size(1280, 1000)


def take_screenshots(base: str, out: Path) -> list[str]:
    """Screenshots of the portal's pages in ``out``; returns any URL requested outside ``base``."""
    out.mkdir(parents=True, exist_ok=True)
    driver = chromium()
    outside: list[str] = []
    try:
        for name, path in SCREENSHOTS:
            driver.get(base + path)
            full_page_screenshot(driver, out / name)
            outside += [u for u in requested_urls(driver) if not u.startswith((base, "data:"))]
    finally:
        driver.quit()
    return outside


def auditor_screenshot(store: str, out: Path, path: str = "/staffing?lang=en") -> Path:
    """A screenshot of an auditors' page: served over mutual TLS to an auditor certificate (fetched here,
    the browser holding no certificate), then shown in chromium from a local file with the style sheet
    inlined."""
    import ssl

    tmp = Path(tempfile.mkdtemp(prefix="portal-auditor-"))
    try:
        subprocess.run([sys.executable, "-m", "verify.certs", "init", str(tmp / "certs")], check=True,
                       capture_output=True)
        ctx = ssl.create_default_context(cafile=str(tmp / "certs" / "server" / "ca.pem"))
        auditor = tmp / "certs" / "auditor"
        ctx.load_cert_chain(str(auditor / "client.pem"), str(auditor / "client.key"))
        port, aport = free_port(), free_port()
        with portal_process(store, port, ["--auditor-listen", f"127.0.0.1:{aport}", "--auditor-tls-dir",
                                          str(tmp / "certs" / "server")]):
            with urllib.request.urlopen(f"https://127.0.0.1:{aport}{path}", context=ctx, timeout=60) as r:
                html = r.read().decode()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/static/portal.css", timeout=60) as r:
                css = r.read().decode()
        page = tmp / "page.html"
        page.write_text(html.replace('<link rel="stylesheet" href="/static/portal.css">', f"<style>{css}</style>"))
        driver = chromium()
        try:
            driver.get(page.as_uri())
            target = out / "portal-auditor-staffing-en.png"
            full_page_screenshot(driver, target)
        finally:
            driver.quit()
        return target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fetch(url: str) -> tuple[int, float]:
    began = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        status = e.code
    return status, (time.perf_counter() - began) * 1000


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]  # nearest rank


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``checkpoint-bench portal``."""
    parser.add_argument("--decisions", type=int, default=2_050_000, help="simulated decisions over the year")
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--store", default=None, help="an existing store to read instead of simulating")
    parser.add_argument("--renders", type=int, default=40, help="fetches of each page")
    parser.add_argument("--out", type=Path, default=Path("results/portal"))
    parser.add_argument("--screenshots", type=Path, default=None, help="write portal-*.png here")
    parser.add_argument("--keep", action="store_true", help="keep the simulated store (printed)")
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="the portal's state directory, kept (a restart: releases read back); default a fresh "
                             "temporary one (a first start: every default page's period protected at start)")


def run(args: argparse.Namespace) -> int:
    """Simulate, serve, fetch every page ``--renders`` times, report p50/p95 against the target."""
    from benchmarks.traffic import SYNTHETIC, TrafficModel, default_start, write_traffic
    from biometrics.event_store import open_event_store

    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"started": datetime.now(UTC).isoformat(timespec="seconds"),
                              "target_p95_ms": TARGET_P95_MS, "cpus": os.cpu_count(),
                              "load_average": os.getloadavg()}
    tmp = Path(tempfile.mkdtemp(prefix="portal-bench-"))
    store = args.store
    try:
        if store is None:
            store = str(tmp / "data")
            Path(store).mkdir()
            start = default_start(args.days)
            print(f"{SYNTHETIC}: simulating {args.days} days from {start}, about {args.decisions} decisions "
                  f"(seed {args.seed})", flush=True)
            writer = open_event_store(store, readonly=False)
            try:
                loaded = write_traffic(writer, TrafficModel(start, args.days, args.decisions, args.seed))
            finally:
                writer.close()
            print(f"  stored {loaded.decisions} decisions ({loaded.ratings} rated) in {loaded.seconds:.1f} s: "
                  f"{loaded.events_per_s:,.0f} events/s", flush=True)
            report["load"] = {"decisions": loaded.decisions, "ratings": loaded.ratings,
                              "seconds": round(loaded.seconds, 1), "events_per_s": round(loaded.events_per_s)}
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        log = args.out / "portal.log"
        if args.state_dir is not None:
            args.state_dir.mkdir(parents=True, exist_ok=True)
        state = "kept" if args.state_dir is not None and any(args.state_dir.iterdir()) else "fresh"
        with portal_process(store, port, ["--banner", "SYNTHETIC DATA (checkpoint-bench traffic)", "--log-level",
                                          "info"], log=log, state_dir=args.state_dir) as proc:
            status, first = _fetch(base + "/")
            warm_up_s = wait_for_warm_up(proc, log)
            report["start"] = {"state_dir": state, "first_fetch_ms": round(first, 1), "first_status": status,
                               "warm_up_s": warm_up_s}
            print(f"start ({state} state directory): / fetched {first:.1f} ms as soon as the portal answered "
                  f"(HTTP {status}), during a warm-up of {warm_up_s:.1f} s; pages measured after it", flush=True)
            baseline = [_fetch(base + "/static/portal.css")[1] for _ in range(args.renders)]
            pages: dict[str, Any] = {}
            print(f"{'page':48} {'cold ms':>8} {'p50 ms':>8} {'p95 ms':>8} {'x css':>6}  target", flush=True)
            for path in PAGES:
                status, cold = _fetch(base + path)
                times = []
                for _ in range(args.renders):
                    status, ms = _fetch(base + path)
                    times.append(ms)
                p50, p95 = statistics.median(times), _pct(times, 95)
                ok = p95 <= TARGET_P95_MS and status == 200
                pages[path] = {"status": status, "cold_ms": round(cold, 1), "p50_ms": round(p50, 1),
                               "p95_ms": round(p95, 1), "max_ms": round(max(times), 1), "met": ok}
                print(f"{path:48} {cold:8.1f} {p50:8.1f} {p95:8.1f} {p50 / statistics.median(baseline):6.1f}  "
                      f"{'met' if ok else 'NOT MET'}{'' if status == 200 else f' (HTTP {status})'}", flush=True)
            report["baseline_css"] = {"p50_ms": round(statistics.median(baseline), 2),
                                      "p95_ms": round(_pct(baseline, 95), 2)}
            report["pages"] = pages
            report["renders"] = args.renders
            if args.screenshots:
                outside = take_screenshots(base, args.screenshots)
                report["screenshots"] = {"dir": str(args.screenshots), "requests_outside": outside}
                print(f"screenshots in {args.screenshots}; requests outside 127.0.0.1: {len(outside)}")
        if args.screenshots:
            auditor_screenshot(store, args.screenshots)
        worst = max(p["p95_ms"] for p in pages.values())
        report["worst_p95_ms"] = worst
        report["met"] = all(p["met"] for p in pages.values())
        print(f"worst page p95 {worst:.1f} ms (target {TARGET_P95_MS:.0f} ms): "
              f"{'met' if report['met'] else 'NOT MET'}; load average {os.getloadavg()[0]:.2f}")
        (args.out / "report.json").write_text(json.dumps(report, indent=1))
        return 0 if report["met"] else 1
    finally:
        if args.keep and args.store is None:
            print(f"store kept in {store}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


__all__ = ["chromium", "portal_process", "requested_urls"]
