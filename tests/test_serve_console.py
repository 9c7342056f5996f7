"""The web console of ``promptreg serve`` in a real headless Chromium, against a real server process
on a real redis-server: sign in, list and search, a prompt with ``/`` in its name, versions and
diffs, a refused move shown before it is confirmed, a promotion confirmed by the fleet, a rollback,
a move made from the command line appearing on the open page without a reload, a compare-and-set
conflict, and a server without tokens being read-only.

Needs Debian's ``chromium`` and ``chromium-driver``; without them the tests are skipped, unless
``PROMPTREG_REQUIRE_BROWSER=1`` (CI), which makes them fail. Screenshots of each step are kept in
``test-artifacts/console/`` (``PROMPTREG_TEST_ARTIFACTS``, ignored by git); the whole prompt page's
is copied to ``docs/serve-console.png`` when that file is missing or ``PROMPTREG_UPDATE_SCREENSHOTS=1``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest

from promptreg import PromptClient
from promptreg.registry import PromptRegistry, PromptRegistryFactory
from tests.backends import PROMPTREG
from tests.redis_server import RedisServer
from tests.serve_helpers import serve_process

pytestmark = [pytest.mark.redis, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
DOCS_SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "serve-console.png"
ARTIFACTS = Path(os.environ.get("PROMPTREG_TEST_ARTIFACTS") or DOCS_SCREENSHOT.parent.parent / "test-artifacts")
"""Where the screenshots are kept after the run (``test-artifacts/console/``, ignored by git)."""
NAME = "team/critic"
V1 = "Do you like {{movie}}?\n"
V2 = "As a {{level}} critic, do you like {{movie}}?\n"  # needs level: backward refuses production 1 -> 2
V3 = "Do you like {{movie}}?\nAnswer in one line.\n"  # same inputs as 1: accepted
WAIT = 15.0

T = TypeVar("T")

try:
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.remote.webelement import WebElement
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError:  # pragma: no cover - the [test] extra installs it
    webdriver = None  # type: ignore[assignment]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    """A headless Chromium of this test alone (its own profile), always quit at the end."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if webdriver is None:
        missing.append("selenium (the [test] extra)")
    if missing:
        message = f"the console tests need {', '.join(missing)} (apt-get install chromium chromium-driver)"
        if os.environ.get("PROMPTREG_REQUIRE_BROWSER") == "1":
            pytest.fail("PROMPTREG_REQUIRE_BROWSER=1 but " + message)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--window-size=1280,900", f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.set_page_load_timeout(30)
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def env(redis_server: RedisServer, namespace: str) -> dict[str, str]:
    return {"PROMPTREG_URL": redis_server.url, "PROMPTREG_NAMESPACE": namespace}


@pytest.fixture
def registry(env: dict[str, str]) -> Iterator[PromptRegistry]:
    reg = PromptRegistryFactory.create_from_config(env)
    try:
        yield reg
    finally:
        reg.close()


def seed(registry: PromptRegistry) -> None:
    registry.create_prompt(NAME, description="Reviews a <movie> & says so", compatibility="backward")
    for text in (V1, V2, V3):
        registry.add_version(NAME, text, author="seed")
    registry.set_label(NAME, "production", 1, author="seed")
    for other in ("team/summary", "support/greeter"):
        registry.create_prompt(other, description=f"The {other} prompt")
        registry.add_version(other, "Hello {{name}}\n")


def wait(driver: WebDriver, condition: Callable[[WebDriver], T], what: str, timeout: float = WAIT) -> T:
    """``condition``'s first truthy value, polled; fails naming ``what`` after ``timeout`` seconds."""

    def attempt(d: WebDriver) -> T | bool:
        try:
            return condition(d)
        except StaleElementReferenceException:  # a live update swapped the section: look again
            return False

    return cast(T, WebDriverWait(driver, timeout).until(attempt, f"timed out waiting for {what}"))


def text_of(driver: WebDriver, selector: str) -> str:
    found = driver.find_elements(By.CSS_SELECTOR, selector)
    return found[0].text if found else ""


def label_version(driver: WebDriver, label: str) -> str | None:
    rows = driver.find_elements(By.CSS_SELECTOR, f'#labels tr[data-label="{label}"]')
    return rows[0].get_attribute("data-version") if rows else None


def visible_rows(driver: WebDriver) -> list[str]:
    rows = driver.find_elements(By.CSS_SELECTOR, "#prompt-list tbody tr")
    return [r.find_element(By.CSS_SELECTOR, "th a").text for r in rows if r.is_displayed()]


def button(driver: WebDriver, selector: str) -> WebElement:
    return driver.find_element(By.CSS_SELECTOR, selector)


def cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [str(PROMPTREG), *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_console_signs_in_promotes_rolls_back_and_follows_the_cli(
    browser: WebDriver, env: dict[str, str], registry: PromptRegistry, tmp_path: Path
) -> None:
    driver = browser
    seed(registry)
    client = PromptClient(env["PROMPTREG_URL"], namespace=env["PROMPTREG_NAMESPACE"], report_interval=0.5)
    try:
        with serve_process(env, tmp_path) as server:
            shot = _screenshots(driver, tmp_path)

            # Sign in: a page request without a session is the sign-in form, not data.
            driver.get(server.base + "/")
            token = wait(driver, lambda d: d.find_element(By.ID, "token"), "the sign-in form")
            assert NAME not in driver.page_source
            shot("sign-in")
            token.send_keys("prt_not-a-token", Keys.ENTER)
            bad_token = wait(driver, lambda d: text_of(d, '#messages[role="alert"]'), "the refused sign-in")
            assert bad_token == "AuthenticationRequiredError: the token is not valid"
            token.clear()
            token.send_keys(server.tokens["writer"], Keys.ENTER)
            wait(driver, lambda d: "writer-bot" in text_of(d, ".who"), "the signed-in header")
            assert "(writer)" in text_of(driver, ".who")

            # The list, its instant filter and the server-side search.
            assert visible_rows(driver) == ["support/greeter", "team/critic", "team/summary"]
            assert "production: 1" in text_of(driver, "#prompt-list tbody")
            registry.set_label("team/summary", "staging", 1, author="ops")  # the list follows the registry
            wait(driver, lambda d: "staging: 1" in text_of(d, "#prompt-list tbody"), "the list's live update")
            assert "team/summary: staging moved unset → 1 by ops" in text_of(driver, "#notices")
            driver.find_element(By.ID, "q").send_keys("crit")
            wait(driver, lambda d: visible_rows(d) == [NAME], "the instant filter")
            shot("list-filtered")
            driver.find_element(By.ID, "q").send_keys(Keys.ENTER)
            wait(driver, lambda d: "matching “crit”" in text_of(d, "#prompt-list .count"), "the server-side search")
            assert visible_rows(driver) == [NAME] and "q=crit" in driver.current_url

            # The prompt page (a name with "/"): labels, fleet, versions, history.
            driver.find_element(By.LINK_TEXT, NAME).click()
            wait(driver, lambda d: d.find_element(By.TAG_NAME, "h1").text == NAME, "the prompt page")
            assert driver.current_url == server.base + "/p/team/critic"
            assert "Reviews a <movie> & says so" in text_of(driver, ".description")
            assert "backward" in driver.find_element(By.TAG_NAME, "main").text
            assert label_version(driver, "production") == "1"
            assert "of 2 clients" in text_of(driver, '#labels tr[data-label="production"] .serving')
            assert "Version 3" in text_of(driver, "#version-title")

            # One version's text.
            driver.find_element(By.CSS_SELECTOR, '#versions a[href$="?v=2"]').click()
            wait(driver, lambda d: text_of(d, "#version-title").startswith("Version 2"), "version 2")
            assert "As a {{level}} critic" in text_of(driver, "#version pre.text")
            assert "level, movie" in text_of(driver, "#version dl.meta")

            # A diff of two versions: the added line shown as added, the removed as removed.
            Select(driver.find_element(By.ID, "diff-from")).select_by_value("1")
            Select(driver.find_element(By.ID, "diff-to")).select_by_value("2")
            driver.find_element(By.CSS_SELECTOR, "#diff-form button").click()
            added = wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#diff-result .add"), "the diff")
            assert [a.text for a in added] == ["+As a {{level}} critic, do you like {{movie}}?"]
            assert [r.text for r in driver.find_elements(By.CSS_SELECTOR, "#diff-result .del")] == [
                "-Do you like {{movie}}?"
            ]
            assert added[0].value_of_css_property("background-color") != driver.find_element(
                By.CSS_SELECTOR, "#diff-result .hunk"
            ).value_of_css_property("background-color")

            # An incompatible move is refused in the preview, before anything can be confirmed.
            label_input = driver.find_element(By.ID, "move-label")
            assert label_input.get_attribute("value") == "production"
            Select(driver.find_element(By.ID, "move-version")).select_by_value("2")
            assert not button(driver, "#move-confirm").is_enabled()
            button(driver, "#move-preview").click()
            refused = wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#move-check.refused"), "the refusal")
            assert "Refused by the prompt's backward compatibility" in refused[0].text
            assert "adds level" in refused[0].text
            assert not button(driver, "#move-confirm").is_enabled()
            force = driver.find_element(By.ID, "move-force")
            assert force.is_displayed()
            shot("prompt-refused")
            force.click()
            assert button(driver, "#move-confirm").is_enabled()
            force.click()
            assert not button(driver, "#move-confirm").is_enabled()
            assert registry.get_prompt(NAME).labels["production"] == 1  # type: ignore[union-attr]

            # A compatible promotion, confirmed, with the fleet's confirmation.
            Select(driver.find_element(By.ID, "move-version")).select_by_value("3")
            assert not driver.find_elements(By.CSS_SELECTOR, "#move-check.refused")  # a new choice: a new preview
            driver.find_element(By.ID, "move-reason").send_keys("one-line answers")
            driver.find_element(By.ID, "move-reason").send_keys(Keys.ENTER)  # Enter submits: the preview
            ok = wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#move-check.ok"), "the compatible preview")
            assert "Move production: 1 → 3" in ok[0].text
            button(driver, "#move-confirm").click()
            fleet = wait(driver, lambda d: text_of(d, "#move-result .fleet"), "the fleet confirmation")
            assert re.fullmatch(r"Fleet: reached 2 of 2 clients in \d+ ms\.", fleet), fleet
            assert "Moved production 1 → 3" in text_of(driver, "#move-result")
            wait(driver, lambda d: label_version(d, "production") == "3", "the labels table at 3")
            event = registry.history(NAME)[-1]
            assert (event.label, event.version, event.author, event.reason) == (
                "production", 3, "writer-bot", "one-line answers",
            )  # fmt: skip
            wait(driver, lambda d: "one-line answers" in text_of(d, "#history tbody tr"), "the history row")
            shot("prompt-promoted")
            _document(driver, tmp_path)

            # Roll back: the preview says where it goes, then confirm.
            driver.find_element(By.CSS_SELECTOR, '#labels button.rollback[data-label="production"]').click()
            ok = wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#move-check.ok"), "the rollback preview")
            assert "Roll back production: 3 → 1" in ok[0].text
            assert driver.switch_to.active_element.get_attribute("id") == "move-confirm"
            button(driver, "#move-confirm").click()
            wait(driver, lambda d: "Rolled back production 3 → 1" in text_of(d, "#move-result"), "the rollback")
            assert "reached 2 of 2 clients" in text_of(driver, "#move-result .fleet")
            wait(driver, lambda d: label_version(d, "production") == "1", "the labels table back at 1")
            assert registry.get_prompt(NAME).labels["production"] == 1  # type: ignore[union-attr]

            # A move from the command line appears on the open page, without a reload; the preview
            # made before it no longer holds, so it cannot be confirmed.
            driver.execute_script("window.__marker = 'still here'")
            Select(driver.find_element(By.ID, "move-version")).select_by_value("3")
            button(driver, "#move-preview").click()
            wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#move-check.ok"), "the preview 1 -> 3")
            assert button(driver, "#move-confirm").is_enabled()
            cli(env, "label", NAME, "production", "3")
            wait(driver, lambda d: label_version(d, "production") == "3", "the CLI's move on the page")
            assert driver.execute_script("return window.__marker") == "still here"
            wait(driver, lambda d: "production moved 1 → 3" in text_of(d, "#notices"), "the notice")
            assert "set_label" in text_of(driver, "#history tbody tr")
            assert "production moved meanwhile (now at 3): preview again" in text_of(driver, "#move-check")
            assert not button(driver, "#move-confirm").is_enabled()
            shot("prompt-live")

            # A page that missed a move (its stream cut off here) and confirms anyway: the
            # compare-and-set refuses, and the page says so.
            driver.execute_cdp_cmd("Network.enable", {})
            driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*/api/v1/events*"]})
            driver.refresh()
            wait(driver, lambda d: label_version(d, "production") == "3", "the page again")
            Select(driver.find_element(By.ID, "move-version")).select_by_value("1")
            button(driver, "#move-preview").click()
            wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#move-check.ok"), "the preview 3 -> 1")
            registry.set_label(NAME, "production", 1, author="someone-else")
            button(driver, "#move-confirm").click()
            alert = wait(driver, lambda d: text_of(d, '#messages[role="alert"] .error'), "the conflict message")
            assert "Someone moved production meanwhile (it is at 1 now; this page showed 3)" in alert
            assert "reload" in alert.lower()
            assert not button(driver, "#move-confirm").is_enabled()
            shot("prompt-conflict")

            driver.find_element(By.ID, "sign-out").click()
            wait(driver, lambda d: d.find_elements(By.ID, "token"), "the sign-in form after signing out")
            assert driver.get_cookie("promptreg_session") is None
    finally:
        client.close()


def test_console_without_tokens_is_read_only(
    browser: WebDriver, env: dict[str, str], registry: PromptRegistry, tmp_path: Path
) -> None:
    driver = browser
    seed(registry)
    for n in range(100):  # 103 prompts: two pages
        registry.create_prompt(f"bulk/{n:03d}")
    with serve_process(env, tmp_path, tokens=False) as server:
        driver.get(server.base + "/")
        wait(driver, lambda d: "read-only" in text_of(d, ".who"), "the read-only header")
        assert "no tokens configured" in text_of(driver, ".who")
        assert not driver.find_elements(By.ID, "sign-out")
        assert len(visible_rows(driver)) == 100 and "103 prompts" in text_of(driver, "#prompt-list .count")
        driver.find_element(By.LINK_TEXT, "Next page").click()
        wait(driver, lambda d: visible_rows(d) == ["support/greeter", NAME, "team/summary"], "the second page")
        driver.find_element(By.LINK_TEXT, NAME).click()
        wait(driver, lambda d: label_version(d, "production") == "1", "the prompt page")
        assert not driver.find_elements(By.ID, "move-form")
        assert not driver.find_elements(By.CSS_SELECTOR, "button.rollback")
        assert "Version 3" in text_of(driver, "#version-title")
        _screenshots(driver, tmp_path)("read-only")
        # Reading still follows the registry live; the focus stays where it was.
        link = '#labels tr[data-label="production"] a'
        driver.execute_script(f"document.querySelector('{link}').focus()")
        registry.set_label(NAME, "production", 3, author="ops")
        wait(driver, lambda d: label_version(d, "production") == "3", "the live update")
        assert "production moved 1 → 3 by ops" in text_of(driver, "#notices")
        assert driver.switch_to.active_element == driver.find_element(By.CSS_SELECTOR, link)
        assert driver.switch_to.active_element.text == "3"


def _screenshots(driver: WebDriver, folder: Path) -> Callable[[str], Path]:
    counter = iter(range(1, 100))

    def shot(step: str) -> Path:
        path = folder / f"console-{next(counter):02d}-{step}.png"
        assert driver.save_screenshot(str(path)), f"no screenshot at {step}"
        _keep(path)
        return path

    return shot


def _document(driver: WebDriver, folder: Path) -> None:
    """The prompt page, whole (a taller window for the moment), for the docs."""
    size: dict[str, Any] = driver.get_window_size()
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    try:
        driver.set_window_size(1280, min(max(height, 900), 2400))
        path = folder / "serve-console.png"
        assert driver.save_screenshot(str(path))
        _keep(path)
        # Each run's picture differs (times, revisions): the docs' copy is made when it is missing or asked for.
        if not DOCS_SCREENSHOT.exists() or os.environ.get("PROMPTREG_UPDATE_SCREENSHOTS") == "1":
            with contextlib.suppress(OSError):  # a read-only checkout: the copy in tmp_path is enough
                shutil.copyfile(path, DOCS_SCREENSHOT)
    finally:
        driver.set_window_size(size["width"], size["height"])


def _keep(path: Path) -> None:
    """A copy of a screenshot in :data:`ARTIFACTS` (CI keeps the folder); never fails a test."""
    with contextlib.suppress(OSError):
        (ARTIFACTS / "console").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, ARTIFACTS / "console" / path.name)
