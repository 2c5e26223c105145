"""The console in a real browser: ``opmas up`` in a subprocess (free ports, a temp data dir) for
the module, and Playwright driving Debian's chromium headless (never a downloaded browser).

Without chromium (``/usr/bin/chromium``, or ``OPMAS_CHROMIUM``) or the ``playwright`` package, the
tests skip and say why. The module's stack is shared: ``replayed`` replays the sample log once."""
from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.browser.stack import launch, skip_reason
from tests.upstack import Stack, running_stack, wait_until_replayed


def pytest_collection_modifyitems(config, items):
    reason = skip_reason()
    if reason:
        for item in items:
            if "tests/browser/" in str(item.fspath).replace(os.sep, "/"):
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    if skip_reason():
        pytest.skip(skip_reason())
    with running_stack() as running:
        yield running


@pytest.fixture(scope="module")
def replayed(stack: Stack) -> Stack:
    """The sample log replayed (by the live-finding test, else here), its findings stored and its
    events archived."""
    if not stack.replayed:
        stack.replay()
    wait_until_replayed(stack)
    return stack


@pytest.fixture(scope="module")
def browser(stack: Stack):
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=20_000)  # rule checks run in a child process: slow on a busy machine

    with sync_playwright() as p:
        launched = launch(p)
        yield launched
        launched.close()


class PageProblems(list):
    """Script errors and Content-Security-Policy refusals a page logged."""


@pytest.fixture
def new_page(browser):
    """``new_page()``: a page in a fresh browser context (its own sessionStorage); after the test, no
    page may have had a script error or a CSP refusal."""
    contexts, problems = [], PageProblems()

    def make():
        context = browser.new_context(viewport={"width": 1280, "height": 900}, timezone_id="UTC")
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
        page.on("console", lambda message: problems.append(f"console: {message.text}")
                if "Content Security Policy" in message.text or "Refused to" in message.text else None)
        return page

    yield make
    for context in contexts:
        context.close()
    assert not problems, problems


