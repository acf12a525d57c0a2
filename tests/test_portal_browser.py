"""The portal in a real headless browser (Debian's chromium through chromium-driver and Selenium).

One portal process and one browser for the whole module. Every host but 127.0.0.1 is unresolvable in the
browser (``--host-resolver-rules``) and every URL it requests is read back from its performance log: the
pages must ask for nothing outside the portal.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from waiting import wait_until

from benchmarks.portal_bench import chromium, free_port, portal_process, requested_urls
from benchmarks.traffic import TrafficModel, default_start, write_traffic
from biometrics.event_store import open_event_store

pytestmark = [pytest.mark.browser, pytest.mark.server]

PAGES = ("/", "/today", "/arrivals", "/seasonal", "/satisfaction", "/data", "/method")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    store = tmp_path_factory.mktemp("portal-browser")
    writer = open_event_store(store, readonly=False)
    try:
        write_traffic(writer, TrafficModel(default_start(120), 120, 20_000, seed=11))
    finally:
        writer.close()
    port = free_port()
    with portal_process(str(store), port, ["--banner", "SYNTHETIC DATA"]):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def browser(base: str) -> Iterator[Any]:
    driver = chromium()
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def visited(browser: Any, base: str) -> list[str]:
    """Every page in both languages, visited once; the URLs the browser requested meanwhile."""
    requested_urls(browser)  # drop whatever came before
    urls: list[str] = []
    for lang in ("id", "en"):
        for path in PAGES:
            browser.get(f"{base}{path}?lang={lang}")
            assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == lang
            urls += requested_urls(browser)
    return urls


def test_no_request_leaves_the_machine(visited: list[str], base: str) -> None:
    assert any(u.startswith(base + "/static/portal.css") for u in visited)  # the log does record requests
    outside = [u for u in visited if not u.startswith((base + "/", "data:", "about:"))]
    assert outside == []


def test_an_outside_request_would_be_seen_and_would_fail(browser: Any, base: str) -> None:
    """The check above is not vacuous: a request to another host shows in the log and does not resolve."""
    browser.get(base + "/?lang=en")
    requested_urls(browser)
    browser.execute_script("var i = new Image(); i.id = 'probe'; i.src = 'http://example.org/pixel.png';"
                           "document.body.appendChild(i);")
    seen: list[str] = []
    wait_until(lambda: seen.extend(requested_urls(browser)) or any("example.org" in u for u in seen), timeout=10)
    loaded = browser.execute_script("var i = document.getElementById('probe'); return i.complete && i.naturalWidth;")
    assert not loaded


def test_language_switch_on_every_page(browser: Any, base: str) -> None:
    for path in PAGES:
        browser.get(f"{base}{path}?lang=id")
        nav_id = browser.find_element(By.TAG_NAME, "nav").text
        browser.find_element(By.ID, "lang-switch").click()
        wait_until(lambda: browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en", timeout=10)
        assert browser.find_element(By.TAG_NAME, "nav").text != nav_id
        assert "Last update" in browser.find_element(By.ID, "last-update").text
        browser.find_element(By.ID, "lang-switch").click()
        wait_until(lambda: browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "id", timeout=10)
        assert "Pembaruan terakhir" in browser.find_element(By.ID, "last-update").text


def test_charts_and_tables_render(browser: Any, base: str) -> None:
    for path in ("/today", "/arrivals", "/seasonal", "/satisfaction"):
        browser.get(f"{base}{path}?lang=en")
        charts = browser.find_elements(By.CSS_SELECTOR, "svg.chart[role=img]")
        assert charts, path
        for chart in charts:
            assert chart.size["width"] > 300 and chart.size["height"] > 100  # laid out, not collapsed
            assert chart.find_element(By.TAG_NAME, "title").get_attribute("textContent").strip()
        tables = browser.find_elements(By.CSS_SELECTOR, "table caption")
        assert tables and all(t.text for t in tables)
        rows = browser.find_elements(By.CSS_SELECTOR, "table tbody tr")
        assert len(rows) >= 2


def test_station_form_and_bad_input_page(browser: Any, base: str) -> None:
    browser.get(base + "/today?lang=en")
    select = browser.find_element(By.NAME, "station")
    options = [o.get_attribute("value") for o in select.find_elements(By.TAG_NAME, "option")]
    select.find_elements(By.TAG_NAME, "option")[-1].click()
    browser.find_element(By.CSS_SELECTOR, "form.filters button").click()
    wait_until(lambda: f"station={options[-1]}" in browser.current_url, timeout=10)
    browser.get(base + "/today?lang=en&date=2026-02-30")
    assert browser.find_element(By.TAG_NAME, "h1").text.startswith("400")
    assert "2026-02-30" in browser.find_element(By.ID, "error-detail").text


def _fetch_in_page(browser: Any, url: str) -> str:
    return browser.execute_async_script(
        "var done = arguments[arguments.length - 1];"
        "fetch(arguments[0]).then(r => r.text()).then(done, e => done('FAILED ' + e));", url)


def test_downloads_from_the_data_page(browser: Any, base: str) -> None:
    browser.get(base + "/data?lang=en")
    csv_links = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "a.dl-csv")]
    json_links = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "a.dl-json")]
    assert len(csv_links) == len(json_links) == 5
    dictionary = json.loads(_fetch_in_page(browser, base + "/data/dictionary.json"))
    for link in csv_links:
        rows = list(csv.reader(io.StringIO(_fetch_in_page(browser, link))))
        dataset = link.split("/data/")[1].split("?")[0]
        assert rows[0] == [f["name"] for f in dictionary[dataset]]
    for link in json_links:
        doc = json.loads(_fetch_in_page(browser, link))
        assert doc["records"] is not None and doc["fields"]


def test_screenshot_of_a_page(browser: Any, base: str, tmp_path: Path) -> None:
    browser.get(base + "/arrivals?lang=en")
    path = tmp_path / "arrivals.png"
    assert browser.save_screenshot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
