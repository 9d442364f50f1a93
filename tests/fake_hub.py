"""A Hugging Face Hub on a loopback port, for download tests that never touch the network.

It answers what huggingface_hub 2.x asks when it downloads a repo: ``GET /api/models/{repo}/revision/{rev}`` (the
commit, as ``repo_info``), ``GET /api/models/{repo}/tree/{commit}?recursive=...`` (every file's size, git blob id and
LFS sha256, as ``list_repo_tree``) and ``HEAD``/``GET /{repo}/resolve/{rev}/{path}`` with the ``ETag``,
``X-Repo-Commit``, ``X-Linked-Etag``/``X-Linked-Size`` (LFS files) and ``Content-Length`` headers, honouring
``Range: bytes=N-`` with ``206 Partial Content``. Unknown repos get a 404 with ``X-Error-Code: RepoNotFound``.

`pause_at` holds a file's body after that many bytes until `release` is set, so a test can cancel a download
while it is provably mid-file; `requests` records (method, path, Range header) for assertions.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

PIECE = 64 << 10


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_lfs(path: str) -> bool:
    return path.endswith(".safetensors")


def etag_of(path: str, data: bytes) -> str:
    """The etag huggingface_hub names a blob by: the sha256 of an LFS file, else its git blob id."""
    return hashlib.sha256(data).hexdigest() if is_lfs(path) else git_blob_id(data)


class FakeHub:
    def __init__(self, commit: str = "c" * 40) -> None:
        self.commit = commit
        self.repos: dict[str, dict[str, bytes]] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self.pause_at: dict[str, int] = {}  # file path -> bytes sent before the body waits for `release`
        self.paused = threading.Event()
        self.release = threading.Event()
        self.piece_delay = 0.0
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_HEAD(self) -> None:
                hub._answer(self, body=False)

            def do_GET(self) -> None:
                hub._answer(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake-hub", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def add_folder(self, repo: str, folder: Path, extra: dict[str, bytes] | None = None) -> dict[str, bytes]:
        files = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        files.update(extra or {})
        self.repos[repo] = files
        return files

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    # --- answers --------------------------------------------------------------------------------------------

    def _answer(self, handler: BaseHTTPRequestHandler, body: bool) -> None:
        url = urlsplit(handler.path)
        path = unquote(url.path)
        self.requests.append((handler.command, path, handler.headers.get("Range")))
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"] and len(parts) >= 6:
            repo, what = "/".join(parts[2:4]), parts[4]
            files = self.repos.get(repo)
            if files is None:
                return self._not_found(handler)
            if what == "revision":
                return self._json(handler, {"id": repo, "modelId": repo, "sha": self.commit, "private": False,
                                            "siblings": [{"rfilename": name} for name in files]})  # fmt: skip
            if what == "tree":
                return self._json(handler, [self._entry(name, data) for name, data in sorted(files.items())])
        if len(parts) >= 5 and parts[2] == "resolve":
            files = self.repos.get("/".join(parts[:2]))
            name = "/".join(parts[4:])
            if files is None or name not in files:
                return self._not_found(handler)
            return self._file(handler, name, files[name], body)
        self._not_found(handler)

    def _entry(self, name: str, data: bytes) -> dict:
        entry = {"type": "file", "path": name, "size": len(data), "oid": git_blob_id(data)}
        if is_lfs(name):
            entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return entry

    def _json(self, handler: BaseHTTPRequestHandler, value: object) -> None:
        data = json.dumps(value).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _not_found(self, handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(404)
        handler.send_header("X-Error-Code", "RepoNotFound")
        handler.send_header("X-Error-Message", "Repository not found")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    def _file(self, handler: BaseHTTPRequestHandler, name: str, data: bytes, body: bool) -> None:
        start = 0
        wanted = handler.headers.get("Range")
        if wanted and wanted.startswith("bytes=") and wanted.endswith("-"):
            start = int(wanted[len("bytes=") : -1])
        handler.send_response(206 if start else 200)
        etag = etag_of(name, data)
        handler.send_header("ETag", f'"{etag if not is_lfs(name) else git_blob_id(data)}"')
        if is_lfs(name):
            handler.send_header("X-Linked-Etag", f'"{etag}"')
            handler.send_header("X-Linked-Size", str(len(data)))
        handler.send_header("X-Repo-Commit", self.commit)
        handler.send_header("Accept-Ranges", "bytes")
        if start:
            handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        handler.send_header("Content-Length", str(len(data) - start))
        handler.end_headers()
        if not body:
            return
        pause = self.pause_at.get(name)
        sent = start
        try:
            while sent < len(data):
                end = min(len(data), sent + PIECE)
                if pause is not None and sent < pause <= end:
                    end = pause
                handler.wfile.write(data[sent:end])
                handler.wfile.flush()
                sent = end
                if pause is not None and sent == pause:
                    self.paused.set()
                    self.release.wait(30)
                if self.piece_delay:
                    time.sleep(self.piece_delay)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading (a cancelled download)
