"""A real headless Chromium, driven through the DevTools protocol over a pipe.

`--remote-debugging-pipe` makes the browser read commands on its file
descriptor 3 and answer on 4, each message JSON ended by a NUL byte: no
websocket library, no listening port, nothing on the network.  Only what the
report's test needs is here: load a page, collect its console errors, run a
line of JavaScript, click like a mouse, take a screenshot.

    python tests/chromium.py report.html shot.png [WIDTH]

loads a page and writes a screenshot of all of it (to look at by hand).
"""
import base64
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time

# Headless, as root, and with nothing in the background that reaches out.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--disable-dev-shm-usage", "--hide-scrollbars",
         "--remote-debugging-pipe"]


def executable():
    """The installed Chromium (Debian's package is `chromium`), or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class BrowserError(RuntimeError):
    pass


class Browser:
    """One browser with one page.  Use as a context manager."""

    def __init__(self, exe=None, width=1280, height=900, timeout=60.0):
        self.timeout = timeout
        self.events = []
        self._next = 0
        self._buf = b""
        self.session = None
        self._profile = tempfile.mkdtemp(prefix="virtlab-chromium-")
        self._start(exe or executable())
        try:
            self.session = self._attach()
            for domain in ("Page", "Runtime", "Log"):
                self.send(f"{domain}.enable")
            self.send("Emulation.setDeviceMetricsOverride",
                      width=width, height=height, deviceScaleFactor=1, mobile=False)
        except BaseException:
            self.close()
            raise

    def _start(self, exe):
        # The browser's ends of two pipes must be its fds 3 and 4.  Moved
        # above 10 first, so that placing one cannot overwrite the other;
        # close-on-exec there, so that only 3 and 4 reach the browser.
        cmd_r, self._cmd_w = os.pipe()
        self._out_r, out_w = os.pipe()
        high = [_above(fd, 10) for fd in (cmd_r, out_w)]
        for fd in (cmd_r, out_w):
            os.close(fd)

        def protocol_fds():                  # in the child, before exec
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.proc = subprocess.Popen(
            [exe, *FLAGS, f"--user-data-dir={self._profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=protocol_fds, close_fds=False)
        for fd in high:
            os.close(fd)

    def _attach(self):
        deadline = time.monotonic() + self.timeout
        while True:
            pages = [t for t in self.send("Target.getTargets")["targetInfos"]
                     if t["type"] == "page"]
            if pages:
                break
            if time.monotonic() > deadline:
                raise BrowserError("the browser opened no page")
            time.sleep(0.1)
        return self.send("Target.attachToTarget", session=False,
                         targetId=pages[0]["targetId"], flatten=True)["sessionId"]

    # -- the protocol ------------------------------------------------------------

    def send(self, method, session=True, **params):
        """Send one command (to the page unless session=False) and return its result."""
        self._next += 1
        msg = {"id": self._next, "method": method, "params": params}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            self.events.append(reply)

    def _receive(self):
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._out_r], [], [], left)[0]:
                raise BrowserError("the browser did not answer")
            chunk = os.read(self._out_r, 1 << 16)
            if not chunk:
                raise BrowserError("the browser closed its pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def wait_for(self, method):
        """The next event `method` (one already received counts)."""
        while True:
            for i, ev in enumerate(self.events):
                if ev.get("method") == method:
                    return self.events.pop(i)
            self.events.append(self._receive())

    # -- what a test does with a page ----------------------------------------------

    def load(self, path):
        """Open a local file and wait until it has loaded (images included)."""
        url = "file://" + os.path.abspath(path)
        self.send("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression):
        """The value of a JavaScript expression in the page."""
        r = self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                      awaitPromise=True)
        if "exceptionDetails" in r:
            raise BrowserError(f"{expression}: {r['exceptionDetails'].get('text')}")
        return r["result"].get("value")

    def click(self, selector):
        """Scroll the element into view and click its middle with the mouse."""
        box = self.evaluate(
            f"(function () {{ var e = document.querySelector({json.dumps(selector)});"
            " e.scrollIntoView({block: 'center'}); var r = e.getBoundingClientRect();"
            " return [r.left + r.width / 2, r.top + r.height / 2]; })()")
        x, y = box
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left",
                      clickCount=1)

    def errors(self):
        """Every error the page reported: console errors, uncaught exceptions,
        failed loads and the browser's own complaints about the page."""
        out = []
        for ev in self.events:
            p = ev.get("params", {})
            if ev.get("method") == "Runtime.exceptionThrown":
                out.append(p["exceptionDetails"].get("text", "exception"))
            elif ev.get("method") == "Runtime.consoleAPICalled" and \
                    p.get("type") in ("error", "assert"):
                out.append(" ".join(str(a.get("value", a.get("description")))
                                    for a in p.get("args", [])))
            elif ev.get("method") == "Log.entryAdded" and \
                    p["entry"].get("level") == "error":
                out.append(p["entry"].get("text", ""))
        return out

    def screenshot(self, path, full_page=True):
        """A PNG of the page (all of it, or what the window shows)."""
        params = {"format": "png"}
        if full_page:
            size = self.send("Page.getLayoutMetrics")["cssContentSize"]
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": size["width"],
                                "height": size["height"], "scale": 1})
        data = base64.b64decode(self.send("Page.captureScreenshot", **params)["data"])
        with open(path, "wb") as f:
            f.write(data)
        return path

    def close(self):
        try:
            self.send("Browser.close", session=False)
        except (BrowserError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()              # ours: started above, ended by its own handle
            self.proc.wait()
        for fd in (self._cmd_w, self._out_r):
            os.close(fd)
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _above(fd, lowest):
    import fcntl
    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, lowest)


if __name__ == "__main__":
    page, shot = sys.argv[1], sys.argv[2]
    with Browser(width=int(sys.argv[3]) if len(sys.argv) > 3 else 1280) as b:
        b.load(page)
        b.screenshot(shot)
        for e in b.errors():
            print("error:", e)
    print(f"wrote {shot}")
