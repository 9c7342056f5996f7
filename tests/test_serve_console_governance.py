"""Protected labels in the web console of ``promptreg serve``, in a real headless Chromium against a
real server process on a real redis-server (the browser, the registry and the skip rules of
tests/test_serve_console.py): a writer requests the move of a protected label (a direct move is
refused in the preview, never sent); an approver sees it on ``/requests``, approves it, the label
moves; the approver gets no Approve button on its own request; an approval the registry refuses
is shown as one line; a reader sees no button at all.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from promptreg.registry import PromptRegistry
from tests import test_serve_console
from tests.serve_helpers import ServeProcess, serve_process
from tests.test_serve_console import NAME, _screenshots, button, label_version, seed, text_of, wait

try:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.remote.webelement import WebElement
    from selenium.webdriver.support.ui import Select
except ImportError:  # pragma: no cover - the browser fixture skips (or fails in CI) without selenium
    pass

pytestmark = [pytest.mark.redis, pytest.mark.slow]

# The console test's fixtures, so this test runs (or is skipped) exactly as that one is.
browser, env, registry = test_serve_console.browser, test_serve_console.env, test_serve_console.registry

ROLES = {"reader": "reader", "writer": "writer", "approver": "approver"}
"""Token name -> role; each token's identity is ``<name>-bot``."""
PRODUCTION = '#labels tr[data-label="production"]'
REASON = "ship <b>v3</b> & one-line answers"
"""Markup in a reason: the pages show it as text."""


def sign_in(driver: WebDriver, server: ServeProcess, role: str) -> None:
    """Sign in on the sign-in form the current page shows, as the ``role`` token."""
    token = wait(driver, lambda d: d.find_element(By.ID, "token"), "the sign-in form")
    token.send_keys(server.tokens[role], Keys.ENTER)
    wait(driver, lambda d: f"{role}-bot ({role})" in text_of(d, ".who"), f"the header signed in as {role}")


def sign_out(driver: WebDriver) -> None:
    driver.find_element(By.ID, "sign-out").click()
    wait(driver, lambda d: d.find_elements(By.ID, "token"), "the sign-in form after signing out")


def request_row(driver: WebDriver, request_id: str) -> WebElement:
    return driver.find_element(By.CSS_SELECTOR, f'tr[data-request="{request_id}"]')


def decisions(row: WebElement) -> list[str]:
    return [b.get_attribute("data-action") or "" for b in row.find_elements(By.CSS_SELECTOR, "button.decide")]


def test_console_requests_and_approves_the_move_of_a_protected_label(
    browser: WebDriver, env: dict[str, str], registry: PromptRegistry, tmp_path: Path
) -> None:
    driver = browser
    seed(registry)  # team/critic, backward: production -> 1; version 3 has version 1's inputs
    registry.set_label(NAME, "staging", 1, author="seed")
    registry.protect_label(NAME, "production", approvals=1, author="admin-bot", reason="reviewed")
    with serve_process(env, tmp_path, roles=ROLES) as server:
        shot = _screenshots(driver, tmp_path)

        # The writer: the protected label is marked and offers a request, never a direct move.
        driver.get(server.base + "/p/team/critic")
        sign_in(driver, server, "writer")
        assert "protected · 1 approval" in text_of(driver, PRODUCTION)
        assert not driver.find_elements(By.CSS_SELECTOR, f"{PRODUCTION} button.rollback")
        label_input = driver.find_element(By.ID, "move-label")
        assert label_input.get_attribute("value") == "staging"  # the move form neither defaults to it...
        suggested = driver.find_elements(By.CSS_SELECTOR, "#label-names option")
        assert [o.get_attribute("value") for o in suggested] == ["staging"]  # ...nor suggests it
        label_input.clear()
        label_input.send_keys("production")  # typed by hand: refused in the preview, nothing to confirm
        button(driver, "#move-preview").click()
        refused = wait(driver, lambda d: text_of(d, "#move-check.refused"), "the protected label's refusal")
        assert "production is protected (1 approval): it cannot be moved directly." in refused
        assert not button(driver, "#move-confirm").is_enabled()
        assert not driver.find_element(By.ID, "move-force").is_displayed()

        button(driver, f"{PRODUCTION} button.request-move").click()
        assert Select(driver.find_element(By.ID, "request-label")).first_selected_option.text.startswith("production")
        Select(driver.find_element(By.ID, "request-version")).select_by_value("3")
        driver.find_element(By.ID, "request-reason").send_keys(REASON, Keys.ENTER)
        done = wait(driver, lambda d: text_of(d, "#request-result .done"), "the request's confirmation")
        [made] = registry.list_requests(name=NAME, state="pending")
        assert done == f"Requested production 1 → 3 (request {made.id})."
        assert (made.author, made.from_version, made.version, made.reason) == ("writer-bot", 1, 3, REASON)
        wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, f'#requests tr[data-request="{made.id}"]'),
             "the request on the prompt's page")  # fmt: skip
        assert not driver.find_elements(By.CSS_SELECTOR, "button.decide")  # a writer decides nothing
        assert label_version(driver, "production") == "1"
        shot("governance-requested")

        # The approver's own request, and one that the approval below will make stale.
        own = registry.request_label_move(NAME, "production", 3, author="approver-bot", reason="my own")
        stale = registry.request_label_move(NAME, "production", 1, author="writer-bot", reason="back to 1")
        sign_out(driver)
        sign_in(driver, server, "approver")
        driver.find_element(By.LINK_TEXT, "Requests").click()
        wait(driver, lambda d: text_of(d, "h1") == "Move requests", "the requests page")
        rows = driver.find_elements(By.CSS_SELECTOR, "#request-list tbody tr")
        assert [r.get_attribute("data-request") for r in rows] == [stale.id, own.id, made.id]  # newest first
        assert decisions(request_row(driver, own.id)) == []
        assert "your request" in request_row(driver, own.id).text
        assert decisions(request_row(driver, made.id)) == ["approve", "reject"]
        assert REASON in request_row(driver, made.id).text
        assert not driver.find_elements(By.CSS_SELECTOR, "#request-list td b")  # the reason's markup is text
        assert "0/1" in request_row(driver, made.id).text

        # Approve: the panel says what moves, Confirm moves it.
        request_row(driver, made.id).find_element(By.CSS_SELECTOR, 'button[data-action="approve"]').click()
        plan = wait(driver, lambda d: text_of(d, "#decide-plan"), "the decision's plan")
        assert "Approve the move of production of team/critic: 1 → 3, requested by writer-bot" in plan
        assert "This approval completes the count: the label moves now." in plan
        button(driver, "#decide-confirm").click()
        result = wait(driver, lambda d: text_of(d, "#decide-result .done"), "the approval's result")
        assert result.startswith("Moved production of team/critic 1 → 3 (rev ")
        fleet = text_of(driver, "#decide-result .fleet")  # the fleet's confirmation, as after a direct move
        assert fleet.startswith("Fleet: ") and "1 of 1" in fleet, fleet  # the server's own client
        applied = registry.get_request(made.id)
        assert (applied.state.value, applied.decided_by) == ("applied", "approver-bot")
        assert registry.get_prompt(NAME).labels["production"] == 3  # type: ignore[union-attr]
        event = registry.history(NAME)[-1]
        assert (event.action, event.label, event.version, event.author, event.request) == (
            "set_label", "production", 3, "approver-bot", made.id,
        )  # fmt: skip
        wait(driver, lambda d: request_row(d, made.id).get_attribute("data-state") == "applied", "the row applied")
        assert decisions(request_row(driver, made.id)) == []
        shot("governance-approved")

        # An approval the registry refuses (the label moved since the request): one line, nothing written.
        request_row(driver, stale.id).find_element(By.CSS_SELECTOR, 'button[data-action="approve"]').click()
        button(driver, "#decide-confirm").click()
        error = wait(driver, lambda d: text_of(d, '#messages[role="alert"] .error'), "the refusal")
        assert error == (
            "LabelConflictError: label 'production' of prompt 'team/critic' points at version 3, "
            "expected it at version 1"
        )
        assert registry.get_request(stale.id).state.value == "pending"
        assert registry.get_prompt(NAME).labels["production"] == 3  # type: ignore[union-attr]

        # A reader: the requests and the protection, no control.
        sign_out(driver)
        sign_in(driver, server, "reader")
        driver.get(server.base + "/requests?state=<b>")  # a page's refusal: its one line, escaped
        refusal = wait(driver, lambda d: text_of(d, '#messages[role="alert"] .error'), "the page's refusal")
        assert refusal.startswith("InvalidInputError: unknown request state '<b>': one of pending, approved, ")
        driver.get(server.base + "/requests?state=pending")
        wait(driver, lambda d: text_of(d, "#request-list .count") == "2 pending requests", "the pending requests")
        assert not driver.find_elements(By.CSS_SELECTOR, "button.decide, #decide")
        driver.get(server.base + "/p/team/critic")
        wait(driver, lambda d: label_version(d, "production") == "3", "the prompt's page")
        assert "protected · 1 approval" in text_of(driver, PRODUCTION)
        assert driver.find_elements(By.CSS_SELECTOR, f'#requests tr[data-request="{stale.id}"]')
        controls = "#move-form, #request-form, #decide, button.request-move, button.rollback, button.decide"
        assert not driver.find_elements(By.CSS_SELECTOR, controls)
        shot("governance-reader")
