"""Headless Chromium (Debian's ``chromium`` and ``chromium-driver``) driven by Selenium
against ``virtbus dashboard``, real agents, a real broker and Docker.

Selenium blocks; the agents share the test's event loop, so every browser call runs in a
thread (``Browser``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from tests.environment import unavailable
from tests.support.fleet import VIRTBUS
from tests.support.services import AMQP_URL

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_S = 30.0
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,900",
)
SCREENSHOTS = os.environ.get("VIRTBUS_SCREENSHOTS")
"""A directory: the tests save their screenshots of the views there (docs/img)."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Browser:
    """One headless Chromium; every call in a thread."""

    def __init__(self, driver: webdriver.Chrome, base: str) -> None:
        self.driver = driver
        self.base = base

    async def open(self, path: str) -> None:
        await asyncio.to_thread(self.driver.get, self.base + path)

    async def run(self, script: str, *args: Any) -> Any:
        return await asyncio.to_thread(self.driver.execute_script, script, *args)

    async def run_async(self, script: str, *args: Any) -> Any:
        return await asyncio.to_thread(self.driver.execute_async_script, script, *args)

    async def until(
        self, check: Callable[[webdriver.Chrome], Any], timeout_s: float = WAIT_S
    ) -> Any:
        """Until ``check`` is truthy; the page redraws rows as events come, so an element
        gone stale meanwhile only means: look again."""
        wait = WebDriverWait(
            self.driver,
            timeout_s,
            poll_frequency=0.1,
            ignored_exceptions=(StaleElementReferenceException,),
        )
        return await asyncio.to_thread(wait.until, check)

    async def element(self, css: str, timeout_s: float = WAIT_S) -> WebElement:
        found: WebElement = await self.until(
            lambda d: next(iter(d.find_elements(By.CSS_SELECTOR, css)), False), timeout_s
        )
        return found

    async def text_of(self, css: str, wanted: str, timeout_s: float = WAIT_S) -> None:
        """Until the element ``css`` shows ``wanted``."""

        def shows(d: webdriver.Chrome) -> bool:
            return any(e.text == wanted for e in d.find_elements(By.CSS_SELECTOR, css))

        await self.until(shows, timeout_s)

    async def click(self, css: str) -> None:
        """Click the element ``css`` as it is now (found and clicked at once, in the page:
        a redraw between finding and clicking would leave a stale element)."""
        await self.element(css)
        await self.run("document.querySelector(arguments[0]).click();", css)

    async def type(self, css: str, text: str) -> None:
        element = await self.element(css)
        await asyncio.to_thread(element.send_keys, text)

    async def screenshot(self, name: str) -> None:
        if SCREENSHOTS:
            await asyncio.to_thread(self.driver.save_screenshot, str(Path(SCREENSHOTS) / name))


@contextlib.asynccontextmanager
async def chromium(tmp_path: Path) -> AsyncIterator[webdriver.Chrome]:
    """A fresh headless Chromium (its own profile), quit after."""
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        unavailable("chromium and chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium'}")
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    driver = await asyncio.to_thread(webdriver.Chrome, options=options, service=service)
    yield driver
    await asyncio.to_thread(driver.quit)


class Dashboard:
    """``virtbus dashboard`` as a process of its own."""

    def __init__(self, process: asyncio.subprocess.Process, base: str) -> None:
        self.process = process
        self.base = base

    @classmethod
    async def start(cls, *argv: str, url: str = AMQP_URL) -> Dashboard:
        port = free_port()
        process = await asyncio.create_subprocess_exec(
            str(VIRTBUS),
            "dashboard",
            "--connect",
            url,
            "--listen",
            f"127.0.0.1:{port}",
            "--discover",
            "1",
            *argv,
            stderr=asyncio.subprocess.PIPE,
        )
        assert process.stderr is not None
        line = await asyncio.wait_for(process.stderr.readline(), WAIT_S)
        assert line.startswith(b"dashboard: http://"), line
        asyncio.get_running_loop().create_task(_drain(process))
        return cls(process, f"http://127.0.0.1:{port}")

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            await asyncio.wait_for(self.process.wait(), WAIT_S)


async def _drain(process: asyncio.subprocess.Process) -> None:
    assert process.stderr is not None
    while await process.stderr.readline():
        pass
