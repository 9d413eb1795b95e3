"""The gateway's page in a real browser: headless Chromium driven by selenium.

It loads and lists the folder, ticking two checkboxes and pressing the button downloads a zip of
exactly those two files, a name made of HTML shows as text, and the page fits a phone's width.
The wide screenshot is saved to docs/gateway.png (the README shows it), the phone one to
docs/gateway-phone.png. With uploads allowed, the page's form uploads picked files and a whole
folder into the folder shown (docs/gateway-upload.png shows it with four files picked).
"""

from __future__ import annotations

import os
import pathlib
import time
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from multiresp.gateway import create_app

from conftest import LiveServer, require_tool

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
WAIT = 30  # seconds for the browser to start, load or download
WIDE = (1200, 720)  # CSS pixels of the desktop screenshot
PHONE = (390, 844)  # CSS pixels of a phone held upright


@pytest.fixture
def share(tmp_path: pathlib.Path) -> pathlib.Path:
    """A folder like a user's: model outputs, a table, a readme, and a name made of HTML."""
    root = tmp_path / "outputs"
    (root / "images").mkdir(parents=True)
    (root / "reports").mkdir()
    for i in range(4):
        (root / "images" / f"mask-{i}.png").write_bytes(os.urandom(180_000 + i * 5_000))
    for i in range(3):
        (root / "reports" / f"report-{i}.json").write_text(f'{{"score": 0.9{i}}}\n')
    (root / "README.md").write_text("# Outputs\n\nWhat the model produced.\n")
    (root / "table.csv").write_text("a,b\n" + "".join(f"{i},{i * i}\n" for i in range(20_000)))
    (root / "weights.bin").write_bytes(os.urandom(3 << 20))
    (root / "<script>x.txt").write_text("a file whose name is HTML\n")
    stamp = time.mktime((2026, 11, 30, 14, 5, 0, 0, 0, -1))
    for path in root.rglob("*"):
        os.utime(path, (stamp, stamp))
    return root


@pytest.fixture
def browser(tmp_path: pathlib.Path) -> Iterator[Any]:
    chromium = require_tool("chromium")
    chromedriver = require_tool("chromedriver")
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--window-size={WIDE[0]},{WIDE[1]}",
    ]:
        options.add_argument(flag)
    options.add_experimental_option(
        "prefs",
        {
            "download.default_directory": str(downloads),
            "download.prompt_for_download": False,
            "safebrowsing.enabled": False,
        },
    )
    service = webdriver.ChromeService(executable_path=chromedriver)
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(WAIT)
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    driver.downloads = downloads
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(condition: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def downloaded_zip(folder: pathlib.Path) -> pathlib.Path:
    """The zip the browser saved, once complete: Chrome reserves the name with an empty file
    and writes to a ``.crdownload`` file, renamed over it at the end."""

    def complete() -> list[pathlib.Path]:
        names = list(folder.iterdir())
        if any(p.suffix == ".crdownload" for p in names):
            return []
        return [p for p in names if p.suffix == ".zip" and zipfile.is_zipfile(p)]

    found = wait_for(complete, "the zip to download")
    assert len(found) == 1, found
    return found[0]


def row_names(driver: Any) -> list[str]:
    return [a.text for a in driver.find_elements(By.CSS_SELECTOR, "td.name a")]


def checkbox(driver: Any, name: str) -> Any:
    for box in driver.find_elements(By.CSS_SELECTOR, 'input[name="name"]'):
        if box.get_attribute("value") == name:
            return box
    raise AssertionError(f"no checkbox for {name!r}")


def test_page_lists_selects_and_downloads_exactly_the_picked_files(
    browser: Any, share: pathlib.Path, live_server: Callable[..., LiveServer]
) -> None:
    url = live_server(create_app(share)).url
    browser.get(url + "/")
    assert row_names(browser) == [
        "images/",
        "reports/",
        "<script>x.txt",
        "README.md",
        "table.csv",
        "weights.bin",
    ]
    # The HTML name is text: no element was made from it, and the page has its one script.
    assert browser.execute_script("return document.scripts.length") == 1
    link = browser.find_element(By.LINK_TEXT, "<script>x.txt")
    assert link.get_attribute("href") == url + "/files/%3Cscript%3Ex.txt"
    sizes = {
        row.find_element(By.CSS_SELECTOR, "td.name a").text: row.find_element(
            By.CSS_SELECTOR, "td.size"
        ).text
        for row in browser.find_elements(By.CSS_SELECTOR, "tbody tr")
    }
    assert sizes["weights.bin"] == "3.0 MiB"
    images = sum(p.stat().st_size for p in (share / "images").iterdir())
    assert sizes["images/"] == f"{images / 1024:.1f} KiB"  # a folder: the total it holds
    assert "2026-11-30" in browser.find_element(By.CSS_SELECTOR, "td.date").text

    total = browser.find_element(By.ID, "total")
    button = browser.find_element(By.ID, "download")
    assert total.text == "Nothing selected" and not button.is_enabled()
    checkbox(browser, "README.md").click()
    checkbox(browser, "table.csv").click()
    picked = (share / "README.md").stat().st_size + (share / "table.csv").stat().st_size
    assert total.text == f"2 selected · {picked / 1024:.1f} KiB"
    assert button.is_enabled()
    DOCS.mkdir(exist_ok=True)
    browser.get_screenshot_as_file(str(DOCS / "gateway.png"))

    button.click()
    archive_path = downloaded_zip(browser.downloads)
    with zipfile.ZipFile(archive_path) as archive:
        assert archive.testzip() is None
        got = {info.filename: archive.read(info) for info in archive.infolist()}
    assert got == {
        "README.md": (share / "README.md").read_bytes(),
        "table.csv": (share / "table.csv").read_bytes(),
    }


def test_page_browses_into_a_folder_and_selects_all(
    browser: Any, share: pathlib.Path, live_server: Callable[..., LiveServer]
) -> None:
    url = live_server(create_app(share)).url
    browser.get(url + "/")
    browser.find_element(By.LINK_TEXT, "reports/").click()
    wait_for(lambda: browser.current_url == url + "/browse/reports/", "the folder page")
    assert row_names(browser) == ["report-0.json", "report-1.json", "report-2.json"]
    browser.find_element(By.ID, "all").click()
    reports = sum(p.stat().st_size for p in (share / "reports").iterdir())
    assert browser.find_element(By.ID, "total").text == f"3 selected · {reports} B"
    browser.find_element(By.ID, "download").click()
    archive_path = downloaded_zip(browser.downloads)
    with zipfile.ZipFile(archive_path) as archive:
        assert archive.namelist() == ["report-0.json", "report-1.json", "report-2.json"]


def test_page_fits_a_phone(
    browser: Any, share: pathlib.Path, live_server: Callable[..., LiveServer]
) -> None:
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": PHONE[0], "height": PHONE[1], "deviceScaleFactor": 2, "mobile": True},
    )
    browser.get(live_server(create_app(share)).url + "/")
    width = browser.execute_script("return document.documentElement.scrollWidth")
    assert width <= PHONE[0]  # nothing sticks out sideways
    assert not browser.find_element(By.CSS_SELECTOR, "td.date").is_displayed()
    button = browser.find_element(By.ID, "download")
    bottom = browser.execute_script("return arguments[0].getBoundingClientRect().bottom", button)
    assert 0 < bottom <= PHONE[1]  # the download button stays on screen
    checkbox(browser, "weights.bin").click()
    assert browser.find_element(By.ID, "total").text == "1 selected · 3.0 MiB"
    browser.get_screenshot_as_file(str(DOCS / "gateway-phone.png"))


def test_upload_form_stores_picked_files_and_a_folder(
    browser: Any,
    share: pathlib.Path,
    tmp_path: pathlib.Path,
    live_server: Callable[..., LiveServer],
) -> None:
    picked = tmp_path / "picked"
    (picked / "run-8" / "masks").mkdir(parents=True)
    loose = [picked / "notes.txt", picked / "scores.csv"]
    loose[0].write_text("uploaded from the page\n")
    loose[1].write_text("a,b\n1,2\n")
    (picked / "run-8" / "report.json").write_text('{"score": 0.97}\n')
    (picked / "run-8" / "masks" / "mask-0.png").write_bytes(os.urandom(90_000))
    url = live_server(create_app(share, allow_upload=True)).url
    browser.get(url + "/browse/reports/")
    send = browser.find_element(By.ID, "send")
    assert not send.is_enabled()  # nothing picked yet
    browser.find_element(By.ID, "upload-files").send_keys("\n".join(map(str, loose)))
    browser.find_element(By.ID, "upload-folder").send_keys(str(picked / "run-8"))
    picked_text = browser.find_element(By.ID, "picked").text
    assert picked_text.startswith("4 to upload")
    assert send.is_enabled()
    browser.get_screenshot_as_file(str(DOCS / "gateway-upload.png"))
    send.click()
    wait_for(lambda: "notes.txt" in row_names(browser), "the page to list the uploads")
    assert browser.current_url == url + "/browse/reports/"
    assert row_names(browser) == [
        "run-8/",
        "notes.txt",
        "report-0.json",
        "report-1.json",
        "report-2.json",
        "scores.csv",
    ]
    reports = share / "reports"
    assert (reports / "notes.txt").read_bytes() == loose[0].read_bytes()
    assert (reports / "scores.csv").read_bytes() == loose[1].read_bytes()
    for inner in ("report.json", "masks/mask-0.png"):
        assert (reports / "run-8" / inner).read_bytes() == (picked / "run-8" / inner).read_bytes()


def test_no_upload_form_without_allow_upload(
    browser: Any, share: pathlib.Path, live_server: Callable[..., LiveServer]
) -> None:
    browser.get(live_server(create_app(share)).url + "/")
    assert browser.find_elements(By.ID, "upload") == []
