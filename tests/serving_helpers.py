"""Servers and clients for the serving tests: `ase-mllm serve`'s app on 127.0.0.1 (in a thread of the test process, or
the command in its own process), raw HTTP requests that report status, body, headers and latency, and small image
servers with a redirect and a slow drip."""

import base64
import contextlib
import http.client
import http.server
import io
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request

import PIL.Image

from conftest import free_port, wait_until_serving


def data_url(image: PIL.Image.Image, format: str = "PNG", **save) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **save)
    return f"data:image/{format.lower()};base64," + base64.b64encode(buffer.getvalue()).decode()


def image_message(url: str, text: str | None = None) -> list[dict]:
    content = [{"type": "image_url", "image_url": {"url": url}}]
    return [{"role": "user", "content": content + ([{"type": "text", "text": text}] if text else [])}]


def chat_body(url: str, max_tokens: int = 4, **fields) -> dict:
    return {"messages": image_message(url), "max_tokens": max_tokens, "temperature": 0, **fields}


@contextlib.contextmanager
def served(model, **options):
    """`build_app(model, **options)` under uvicorn on a free port of 127.0.0.1, in a thread; yields the base URL."""
    import uvicorn

    from modeling_ase_mllm.inference.serving import build_app

    app, manager, state = build_app(str(model), device="cpu", **options)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                                           timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started:
        if not thread.is_alive() or time.time() > deadline:
            raise RuntimeError("the in-process server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        app.state.chat.preparing.shutdown(wait=False, cancel_futures=True)


class Answer:
    """One HTTP answer: `status`, `json` (None when the body is not JSON), `headers`, `seconds` it took."""

    def __init__(self, status, body: bytes, headers, seconds: float):
        self.status, self.body, self.headers, self.seconds = status, body, headers, seconds
        try:
            self.json = json.loads(body)
        except ValueError:
            self.json = None

    @property
    def message(self) -> str:
        return self.json["error"]["message"] if self.json and "error" in self.json else ""

    @property
    def content(self) -> str:
        return self.json["choices"][0]["message"]["content"]

    def __repr__(self):
        return f"Answer({self.status}, {self.body[:300]!r})"


def post(base: str, body, path: str = "/v1/chat/completions", headers: dict | None = None, timeout: float = 300,
         raw: bytes | None = None) -> Answer:
    """POST `body` as JSON (or `raw` bytes) and return the answer, whatever its status."""
    data = raw if raw is not None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
    return _send(request, timeout)


def get(base: str, path: str, headers: dict | None = None, timeout: float = 60) -> Answer:
    return _send(urllib.request.Request(base + path, headers=headers or {}), timeout)


def _send(request, timeout) -> Answer:
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Answer(response.status, response.read(), response.headers, time.perf_counter() - started)
    except urllib.error.HTTPError as error:
        return Answer(error.code, error.read(), error.headers, time.perf_counter() - started)


def abandoned_post(base: str, body: dict, after_s: float) -> None:
    """Send a POST on a raw connection and hang up after `after_s` seconds, without reading the answer."""
    host, port = base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=after_s + 30)
    connection.request("POST", "/v1/chat/completions", body=json.dumps(body),
                       headers={"Content-Type": "application/json"})
    time.sleep(after_s)
    connection.sock.close()
    connection.close()


def start_cli_server(model, *flags, env: dict | None = None, port: int | None = None):
    """`ase-mllm serve --model MODEL --port P --device cpu FLAGS` in its own process, once `/health` answers;
    returns `(process, base URL)` (stderr holds the access log)."""
    port = port or free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "modeling_ase_mllm.cli", "serve", "--model", str(model), "--port", str(port),
         "--device", "cpu", *map(str, flags)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
    )
    wait_until_serving(process, port, 300, lambda: process.communicate()[1])
    return process, f"http://127.0.0.1:{port}"


def stop(process) -> tuple[str, str]:
    if process.poll() is None:
        process.kill()
    return process.communicate()


class ImageServer:
    """An HTTP server on `host` (a loopback address) for the SSRF tests, in a thread; `routes` maps a path to bytes,
    to `("redirect", url)`, or to `("drip", bytes_per_step, seconds)` (a slow drip that never finishes in time)."""

    def __init__(self, routes: dict, host: str = "127.0.0.1"):
        self.routes, self.requests = routes, []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                owner.requests.append(self.path)
                route = owner.routes.get(self.path)
                if route is None:
                    self.send_error(404)
                elif isinstance(route, bytes):
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(route)))
                    self.end_headers()
                    self.wfile.write(route)
                elif route[0] == "redirect":
                    self.send_response(302)
                    self.send_header("Location", route[1])
                    self.end_headers()
                else:
                    self.send_response(200)
                    self.end_headers()
                    try:
                        for _ in range(100):
                            self.wfile.write(b"\x89" * route[1])
                            self.wfile.flush()
                            time.sleep(route[2])
                    except OSError:
                        pass  # the fetcher gave up

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://{host}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
