"""Screenshots of the console for the docs: docs/img/overview.png, findings.png, finding.png.

Starts ``opmas up`` on free ports in a temp data dir (as the browser tests do), replays
samples/security_events.jsonl, signs in as admin in Debian's chromium and saves the pages.

    python scripts/screenshots.py [--out docs/img]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.browser.stack: the browser tests' stack and browser

from tests.browser.stack import chromium_path, launch, sign_in, skip_reason  # noqa: E402
from tests.upstack import running_stack, wait_until_replayed  # noqa: E402

FINDING_RULE = "ce1f881a-74c7-4f2c-9c74-bfe7098eb43a"  # Webshell Command Execution Via Request Parameter: a field shown


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    args = parser.parse_args()
    if skip_reason():
        print(f"error: {skip_reason()}", file=sys.stderr)
        return 1
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    with running_stack() as stack, sync_playwright() as p:
        stack.replay()
        wait_until_replayed(stack)
        token = stack.token()
        finding = stack.get("/findings", token, rule_id=FINDING_RULE, limit=1).json()["items"][0]
        browser = launch(p)
        page = browser.new_context(viewport={"width": 1360, "height": 900}, timezone_id="UTC").new_page()
        sign_in(page, stack)

        page.get_by_label("Range").select_option(label="last 30d")  # the sample's events are from 2026-11-25
        page.locator(".chart div[role=img]").first.wait_for()
        page.get_by_role("heading", name="Top rules").wait_for()
        page.wait_for_timeout(500)
        page.screenshot(path=str(args.out / "overview.png"), full_page=True)

        page.get_by_role("navigation", name="Pages").get_by_role("link", name="Findings").click()
        page.locator("table.findings tbody tr").nth(20).wait_for()
        page.screenshot(path=str(args.out / "findings.png"))  # the viewport: the list goes on

        page.goto(f"{stack.base}#/findings/{finding['id']}")
        page.locator("table.around tr.matched").wait_for()
        page.screenshot(path=str(args.out / "finding.png"), full_page=True)
        browser.close()
    for name in ("overview", "findings", "finding"):
        print(args.out / f"{name}.png")
    print(f"(chromium: {chromium_path()})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
