"""The chat page's static files: loaded once from the package folder, served from memory.

Every file under the folder is read when the server starts; a request can only ever name one
of them (a dictionary lookup), so no request path, encoded or not, reaches the file system:
path traversal has nothing to traverse. A file that is a link leading out of the folder is
not loaded at all.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from urllib.parse import unquote, urlsplit

log = logging.getLogger(__name__)

# The folder shipped in the package (package data, see pyproject.toml).
PACKAGE_FOLDER = ("threadchat", "web/static")
INDEX = "index.html"
# A sanity bound: the page is a few small files; this keeps a mistake from filling memory.
MAX_TOTAL_BYTES = 16 * 1024 * 1024

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".txt": "text/plain; charset=utf-8",
}
DEFAULT_CONTENT_TYPE = "application/octet-stream"


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: str
    # A strong validator: the page's files carry no version in their names, so browsers
    # revalidate each time (Cache-Control: no-cache) and get 304 Not Modified while unchanged.
    etag: str


def default_folder() -> Path:
    package, folder = PACKAGE_FOLDER
    return Path(str(resources.files(package).joinpath(folder)))


class StaticFiles:
    """The files of one folder by URL path ("/index.html"); "/" is the index."""

    def __init__(self, files: dict[str, StaticFile]) -> None:
        self._files = files

    @classmethod
    def load(cls, folder: Path | None = None) -> StaticFiles:
        root = (folder or default_folder()).resolve()
        files: dict[str, StaticFile] = {}
        total = 0
        if not root.is_dir():
            log.warning("no web page to serve: %s is not a folder", root)
            return cls(files)
        for path in sorted(root.rglob("*")):
            relative = path.relative_to(root)
            if any(part.startswith(".") for part in relative.parts) or not path.is_file():
                continue
            if not path.resolve().is_relative_to(root):
                log.warning("not serving %s: it leads out of %s", relative, root)
                continue
            body = path.read_bytes()
            total += len(body)
            if total > MAX_TOTAL_BYTES:
                raise ValueError(f"the web folder {root} holds more than {MAX_TOTAL_BYTES} bytes")
            content_type = CONTENT_TYPES.get(path.suffix.lower(), DEFAULT_CONTENT_TYPE)
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            files["/" + relative.as_posix()] = StaticFile(body, content_type, etag)
        return cls(files)

    def __len__(self) -> int:
        return len(self._files)

    def find(self, target: str) -> StaticFile | None:
        """The file a request target names (its path; the query is ignored), or None."""
        path = url_path(target)
        if path is None:
            return None
        if path.endswith("/"):
            path += INDEX
        return self._files.get(path)


def url_path(target: str) -> str | None:
    """The decoded path of a request target ("/a%20b?x" -> "/a b"); None if it is not an
    origin-form path (an absolute URL, "*", or something that is not a path at all)."""
    if not target.startswith("/") or target.startswith("//"):
        return None
    try:
        path = unquote(urlsplit(target).path, errors="strict")
    except (UnicodeDecodeError, ValueError):
        return None
    return path if "\x00" not in path else None
