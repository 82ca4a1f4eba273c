"""Headless Chromium driven over the DevTools protocol, for the cluster page's test: start it
on a page, evaluate JavaScript there, take a screenshot. Chromium is Debian's `chromium`
package (.ci/run installs it); the protocol goes over a WebSocket (websocket-client)."""
import base64
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from typing import Any, Dict, Optional

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--remote-debugging-port=0", "--window-size=1200,900"]
START_TIMEOUT_S = 30.0


def chromium_binary() -> Optional[str]:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    def __init__(self, url: str) -> None:
        import websocket  # websocket-client; imported here so a missing one is a skip, not an error

        binary = chromium_binary()
        assert binary is not None
        self._profile = tempfile.mkdtemp(prefix="replichat-chromium-")
        self._process = subprocess.Popen([binary, *CHROMIUM_FLAGS, f"--user-data-dir={self._profile}", url],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._ids = itertools.count(1)
        try:
            port = self._devtools_port()
            target = self._page_target(port)
            self._socket = websocket.create_connection(target["webSocketDebuggerUrl"], timeout=START_TIMEOUT_S,
                                                       suppress_origin=True)
        except BaseException:
            self.close()
            raise

    def _devtools_port(self) -> int:
        """Chromium writes the port it chose to DevToolsActivePort in its profile."""
        path = os.path.join(self._profile, "DevToolsActivePort")
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"chromium exited: {self._process.stderr.read().decode(errors='replace')[-2000:]}")
            try:
                with open(path) as f:
                    first = f.readline().strip()
                if first:
                    return int(first)
            except FileNotFoundError:
                pass
            time.sleep(0.1)
        raise RuntimeError("chromium did not open its DevTools port")

    def _page_target(self, port: int) -> Dict[str, Any]:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as answer:
                pages = [t for t in json.loads(answer.read()) if t.get("type") == "page"]
            if pages:
                return pages[0]
            time.sleep(0.1)
        raise RuntimeError("chromium shows no page")

    def call(self, method: str, **params: Any) -> Dict[str, Any]:
        message_id = next(self._ids)
        self._socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            answer = json.loads(self._socket.recv())
            if answer.get("id") == message_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float, what: str) -> Any:
        """Polls `expression` until it is truthy (the page updates itself once a second); an
        expression that throws (the page is still loading) counts as false."""
        deadline = time.monotonic() + timeout
        guarded = f"(() => {{ try {{ return ({expression}); }} catch (error) {{ return false; }} }})()"
        while True:
            value = self.evaluate(guarded)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"the page did not show {what} within {timeout}s "
                                     f"(it shows: {self.evaluate('document.body.innerText')!r})")
            time.sleep(0.1)

    def screenshot(self, path: str) -> None:
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def close(self) -> None:
        socket = getattr(self, "_socket", None)
        if socket is not None:
            socket.close()
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait(10)
        if self._process.stderr is not None:
            self._process.stderr.close()
        shutil.rmtree(self._profile, ignore_errors=True)
