"""The pages in Debian's headless Chromium, driven by playwright (captioning/templates, static).

A person's path: upload through the form, see "Upload complete" at once, open the player, watch
the CC toggle enable by itself when the captions exist, and see a cue become active. The title
is an XSS attempt, which must show as text and run nothing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.captioning.conftest import Media, System

CHROMIUM = "/usr/bin/chromium"
XSS = '<img src=x onerror="window.pwned=1">'

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def test_upload_through_the_page_then_captions_play(leveret_system: System, media: Media,
                                                    tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    if shutil.which("chromium") is None:
        pytest.fail("Debian's chromium is not installed; `make test` installs it")
    url = leveret_system.start_web()
    leveret_system.start_workers(1)
    dialogs: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page()
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            page.goto(url)
            page.fill("input[name=title]", XSS)
            page.set_input_files("input[name=file]", str(media.speech_mp4))
            page.click("button[type=submit]")
            page.wait_for_function(
                "document.getElementById('message').textContent.startsWith('Upload complete')",
                timeout=10_000)
            page.wait_for_selector(f"#videos td a:text-is('{XSS}')", timeout=10_000)
            page.click("#watch")
            page.wait_for_selector("h1")
            assert page.inner_text("h1") == XSS  # shown as text, not markup
            assert page.is_disabled("#cc") or page.get_attribute("#cc", "aria-pressed") == "true"
            page.wait_for_function("!document.getElementById('cc').disabled", timeout=90_000)
            assert page.get_attribute("#cc", "aria-pressed") == "true"  # on by itself
            assert page.evaluate("document.querySelector('video').textTracks[0].kind") == \
                "captions"
            page.evaluate("() => { const v = document.querySelector('video');"
                          " v.muted = true; v.currentTime = 1.0; return v.play(); }")
            page.wait_for_function(
                "document.querySelector('video').textTracks[0].activeCues.length > 0",
                timeout=30_000)
            cue = page.evaluate("document.querySelector('video').textTracks[0].activeCues[0].text")
            assert "welcome" in cue.lower() or "captioning" in cue.lower()
            page.click("#cc")
            assert page.get_attribute("#cc", "aria-pressed") == "false"
            assert page.evaluate("document.querySelector('video').textTracks[0].mode") == "hidden"
            page.screenshot(path=str(tmp_path / "player.png"))
            assert page.evaluate("window.pwned === undefined")
        finally:
            browser.close()
    assert dialogs == []
