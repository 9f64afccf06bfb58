"""A small Hugging Face Hub look-alike for the tests, standard library only.

The real ``huggingface_hub`` / ``datasets`` / ``diffusers`` clients talk to it over HTTP on 127.0.0.1
(``HF_ENDPOINT``, see tests/conftest.py). Repos live in memory: each keeps every commit as a full
``{path: bytes}`` snapshot, and its ``main`` branch points at the last one. A new repo starts with one
commit holding a ``.gitattributes`` file, as on the Hub.

Endpoints (``{type}`` is ``models`` or ``datasets``; ``{prefix}`` is empty for models and ``datasets/``
for datasets; ``{rev}`` is a URL-quoted branch name or commit id):

    GET      /api/agent-harnesses                        empty agent-harness registry
    POST     /api/repos/create                           {"url"}; 409 if the repo exists
    POST     /api/validate-yaml                          {"errors": [], "warnings": []}
    GET      /api/{type}/{repo}[/revision/{rev}]         repo info: id, sha, private, siblings
    GET      /api/{type}/{repo}/tree/{rev}[/{path}]      files and folders (?recursive=true for all levels)
    POST     /api/{type}/{repo}/preupload/{rev}          upload mode per file: "lfs" (binary or >= 10 MB) or "regular"
    POST     /api/{type}/{repo}/commit/{rev}             NDJSON commit: header, file, lfsFile, deletedFile, deletedFolder
    POST     /{prefix}{repo}.git/info/lfs/objects/batch  LFS "basic" transfer: an upload href per missing object
    PUT      /lfs-objects/{sha256}                       LFS object bytes, checked against their sha256
    HEAD|GET /{prefix}{repo}/resolve/{rev}/{path}        file with X-Repo-Commit, ETag, Content-Length; Range -> 206

Missing things answer 404 with ``X-Error-Code: RepoNotFound | RevisionNotFound | EntryNotFound``, which the
clients turn into their own exceptions. Every request is recorded in ``HubServer.requests``; a request no
route answers (or one whose handler crashed) is recorded with ``handled=False``, and the test suite fails
on it. ``HubServer.fail_next_commits(n)`` makes the next ``n`` commit requests fail (500 by default);
``HubServer.inject(method, path_regex, statuses)`` makes the next requests matching a route answer each given status
in turn (with optional headers, e.g. ``Retry-After``), or, for a status of ``None``, hold the connection without
answering (a stall) until the client gives up; ``clear_faults()`` drops what is left.

``SilentServer`` is a socket that accepts connections and never answers a byte (a Hub behind a broken proxy or
firewall); it counts the connections, so a test can see the clients' retries. ``FullServer`` never accepts
connections and keeps its queue full, so that new connections time out.
"""

import base64
import hashlib
import json
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit


LFS_MIN_SIZE = 10 * 1024 * 1024  # the Hub stores files from 10 MB on with LFS, and binary files of any size
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.parquet filter=lfs diff=lfs merge=lfs -text\n"


def is_lfs(size: int, head: bytes) -> bool:
    """Whether the Hub stores a file with LFS, from its size and its first 512 bytes."""
    return size >= LFS_MIN_SIZE or b"\0" in head[:512]


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(data: bytes) -> bytes:
    sha256 = hashlib.sha256(data).hexdigest()
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(data)}\n".encode()


def content_id(data: bytes) -> str:
    """The id of a file's content the Hub sends as ETag and preupload oid: sha256 for LFS files, else the git blob id."""
    return hashlib.sha256(data).hexdigest() if is_lfs(len(data), data) else git_blob_sha1(data)


def new_commit_id() -> str:
    return hashlib.sha1(uuid.uuid4().bytes).hexdigest()


class HubError(Exception):
    """An error answer: status, message and the Hub's ``X-Error-Code`` when it has one."""

    def __init__(self, status: int, message: str, code: str | None = None, commit: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.commit = status, message, code, commit


@dataclass
class Repo:
    repo_type: str  # "model" or "dataset"
    repo_id: str
    private: bool
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit id -> {path: bytes}
    main: str = ""  # commit id of the main branch

    def snapshot(self, revision: str) -> tuple[str, dict[str, bytes]]:
        commit = self.main if revision == "main" else revision
        if commit not in self.commits:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit, self.commits[commit]

    def add_commit(self, files: dict[str, bytes]) -> str:
        self.main = new_commit_id()
        self.commits[self.main] = files
        return self.main


@dataclass
class RecordedRequest:
    method: str
    path: str  # as sent, with the query string
    status: int
    handled: bool


@dataclass
class Fault:
    """Answers the next requests of `method` whose path (without the query) matches `pattern` with `statuses[0]`,
    `statuses[1]`, ... in turn; `None` stands for no answer at all (the connection is held, then closed)."""

    method: str
    pattern: str
    statuses: list[int | None]
    headers: dict[str, str] = field(default_factory=dict)
    stall_seconds: float = 30.0


@dataclass
class Request:
    method: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body or b"{}")


class HubServer:
    """The Hub's state plus an HTTP server on 127.0.0.1 serving it from a daemon thread."""

    def __init__(self):
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}  # sha256 -> bytes
        self.requests: list[RecordedRequest] = []
        self.commit_failures_left, self.commit_failure_status = 0, 500
        self.faults: list[Fault] = []
        self.lock = threading.RLock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.routes = [
            ("GET", r"/api/agent-harnesses", self.agent_harnesses),
            ("POST", r"/api/repos/create", self.create_repo_endpoint),
            ("POST", r"/api/validate-yaml", self.validate_yaml),
            ("GET", rf"/api/{_TYPE}/{_REPO}(?:/revision/{_REV})?", self.info),
            ("GET", rf"/api/{_TYPE}/{_REPO}/tree/{_REV}(?:/(?P<path>.+))?", self.tree),
            ("POST", rf"/api/{_TYPE}/{_REPO}/preupload/{_REV}", self.preupload),
            ("POST", rf"/api/{_TYPE}/{_REPO}/commit/{_REV}", self.commit),
            ("POST", rf"/{_PREFIX}{_REPO}\.git/info/lfs/objects/batch", self.lfs_batch),
            ("PUT", r"/lfs-objects/(?P<oid>[0-9a-f]{64})", self.lfs_upload),
            ("HEAD GET", rf"/{_PREFIX}{_REPO}/resolve/{_REV}/(?P<path>.+)", self.resolve),
        ]

    def start(self) -> "HubServer":
        threading.Thread(target=self.httpd.serve_forever, name="hub-server", daemon=True).start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # ----- helpers for tests -----

    def create_repo(self, repo_id: str, repo_type: str = "model", private: bool = False, files=None) -> Repo:
        """Creates a repo directly; `files` ({path: bytes}) are added in a second commit."""
        with self.lock:
            if (repo_type, repo_id) in self.repos:
                raise ValueError(f"The {repo_type} repo {repo_id} exists already.")
            repo = self.repos[repo_type, repo_id] = Repo(repo_type, repo_id, private)
            repo.add_commit({".gitattributes": GITATTRIBUTES})
            if files:
                repo.add_commit({**repo.commits[repo.main], **files})
            return repo

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        with self.lock:
            if (repo_type, repo_id) not in self.repos:
                raise HubError(404, "Repository not found", "RepoNotFound")
            return self.repos[repo_type, repo_id]

    def fail_next_commits(self, n: int, status: int = 500) -> None:
        """Makes the next `n` commit requests answer `status` without committing anything."""
        with self.lock:
            self.commit_failures_left, self.commit_failure_status = n, status

    def inject(self, method: str, pattern: str, statuses, headers=None, stall_seconds: float = 30.0) -> Fault:
        """Makes the next `len(statuses)` `method` requests whose path fully matches the regex `pattern` answer
        `statuses` in turn, without reaching the route; a status of `None` answers nothing (the server holds the
        connection up to `stall_seconds`, or until the client hangs up, then closes it). Recorded with status 0."""
        fault = Fault(method, pattern, list(statuses), dict(headers or {}), stall_seconds)
        with self.lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()
            self.commit_failures_left = 0

    def _take_fault(self, method: str, path: str):
        with self.lock:
            for fault in self.faults:
                if fault.statuses and fault.method == method and re.fullmatch(fault.pattern, path):
                    return fault, fault.statuses.pop(0)
        return None, None

    def unhandled_requests(self, since: int = 0) -> list[RecordedRequest]:
        return [r for r in self.requests[since:] if not r.handled]

    def repo_url(self, repo: Repo) -> str:
        return f"{self.url}/{'datasets/' if repo.repo_type == 'dataset' else ''}{repo.repo_id}"

    # ----- endpoints -----

    def agent_harnesses(self, req):
        return {"standardEnvVars": [], "harnesses": {}}

    def create_repo_endpoint(self, req):
        payload = req.json()
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        repo_type = payload.get("type") or "model"
        private = payload.get("visibility", "private" if payload.get("private") else "public") == "private"
        with self.lock:
            if (repo_type, repo_id) in self.repos:  # the Hub's 409 carries the url, which `exist_ok=True` returns
                url, message = self.repo_url(self.repos[repo_type, repo_id]), f"You already created this {repo_type} repo"
                return 409, {"X-Error-Message": message}, _json_bytes({"error": message, "url": url})
            repo = self.create_repo(repo_id, repo_type, private)
        return {"url": self.repo_url(repo), "name": repo_id}

    def validate_yaml(self, req):
        return {"errors": [], "warnings": []}

    def info(self, req, kind, repo, rev="main"):
        repo = self.repo(repo, kind)
        commit, files = repo.snapshot(rev)
        siblings = []
        for path, data in sorted(files.items()):
            entry = _file_entry(path, data)
            sibling = {"rfilename": path, "size": entry["size"], "blobId": entry["oid"]}
            if "lfs" in entry:
                sibling["lfs"] = {"sha256": entry["lfs"]["oid"], "size": entry["size"],
                                  "pointerSize": entry["lfs"]["pointerSize"]}
            siblings.append(sibling)
        return {"id": repo.repo_id, "author": repo.repo_id.split("/")[0], "sha": commit, "private": repo.private,
                "disabled": False, "gated": False, "downloads": 0, "likes": 0, "tags": [],
                "lastModified": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "siblings": siblings}

    def tree(self, req, kind, repo, rev, path=""):
        commit, files = self.repo(repo, kind).snapshot(rev)
        prefix = f"{path.strip('/')}/" if path.strip("/") else ""
        if prefix and not any(p.startswith(prefix) for p in files):
            raise HubError(404, f"{path} does not exist on {rev}", "EntryNotFound", commit)
        recursive = req.query.get("recursive", "").lower() in ("true", "1")
        entries = {}
        for file_path, data in sorted(files.items()):
            if not file_path.startswith(prefix):
                continue
            parts = file_path[len(prefix):].split("/")
            for depth in range(1, len(parts) if recursive else min(len(parts), 2)):
                folder = prefix + "/".join(parts[:depth])
                entries[folder] = {"type": "directory", "path": folder, "size": 0,
                                   "oid": hashlib.sha1(f"{commit}:{folder}".encode()).hexdigest()}
            if recursive or len(parts) == 1:
                entries[file_path] = _file_entry(file_path, data)
        return list(entries.values())

    def preupload(self, req, kind, repo, rev):
        _, files = self.repo(repo, kind).snapshot(rev)
        answer = []
        for file in req.json()["files"]:
            lfs = is_lfs(file["size"], base64.b64decode(file["sample"]))
            old = files.get(file["path"])  # the client skips files whose content id did not change
            answer.append({"path": file["path"], "uploadMode": "lfs" if lfs else "regular",
                           "shouldIgnore": False, "oid": None if old is None else content_id(old)})
        return {"files": answer}

    def lfs_batch(self, req, kind, repo):
        self.repo(repo, kind)
        objects = []
        for obj in req.json()["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.lfs_objects:
                entry["actions"] = {"upload": {"href": f"{self.url}/lfs-objects/{obj['oid']}"}}
            objects.append(entry)
        return {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}

    def lfs_upload(self, req, oid):
        if hashlib.sha256(req.body).hexdigest() != oid:
            raise HubError(400, f"LFS object content does not match its oid {oid}")
        with self.lock:
            self.lfs_objects[oid] = req.body
        return b""

    def commit(self, req, kind, repo, rev):
        repo = self.repo(repo, kind)
        if rev != "main":
            raise HubError(404, f"Invalid rev id: {rev} (this test server commits to main only)", "RevisionNotFound")
        with self.lock:
            if self.commit_failures_left > 0:
                self.commit_failures_left -= 1
                raise HubError(self.commit_failure_status, "Failure injected by the test server")
            files = dict(repo.commits[repo.main])
            for line in req.body.splitlines():
                op = json.loads(line)
                key, value = op["key"], op["value"]
                if key == "file":
                    files[value["path"]] = base64.b64decode(value["content"])
                elif key == "lfsFile":
                    if value["oid"] not in self.lfs_objects:
                        raise HubError(400, f"LFS object {value['oid']} of {value['path']} was never uploaded")
                    files[value["path"]] = self.lfs_objects[value["oid"]]
                elif key == "deletedFile":
                    if files.pop(value["path"], None) is None:
                        raise HubError(404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound")
                elif key == "deletedFolder":
                    folder = value["path"].rstrip("/") + "/"
                    files = {p: d for p, d in files.items() if not p.startswith(folder)}
                elif key != "header":
                    raise HubError(400, f"Unknown commit operation {key!r}")
            commit = repo.add_commit(files)
        return {"commitOid": commit, "commitUrl": f"{self.repo_url(repo)}/commit/{commit}", "pullRequestUrl": None}

    def resolve(self, req, kind, repo, rev, path):
        commit, files = self.repo(repo, kind).snapshot(rev)
        if path not in files:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", commit)
        data = files[path]
        headers = {"X-Repo-Commit": commit, "ETag": f'"{content_id(data)}"', "Accept-Ranges": "bytes"}
        if is_lfs(len(data), data):
            headers.update({"X-Linked-Etag": f'"{content_id(data)}"', "X-Linked-Size": str(len(data))})
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", req.headers.get("range", ""))
        if not match or match.groups() == ("", ""):
            return 200, headers, data
        start, end, size = *match.groups(), len(data)  # "bytes=first-[last]" or "bytes=-suffix_length"
        first, last = (int(start), min(int(end or size - 1), size - 1)) if start else (max(size - int(end), 0), size - 1)
        if first > last:
            return 416, {**headers, "Content-Range": f"bytes */{size}"}, b""
        return 206, {**headers, "Content-Range": f"bytes {first}-{last}/{size}"}, data[first:last + 1]

    # ----- dispatch -----

    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes):
        """Returns (status, headers, body, handled) for one request."""
        url = urlsplit(raw_path)
        fault, status = self._take_fault(method, url.path)
        if fault is not None:
            if status is None:
                return None, {"stall": fault.stall_seconds}, b"", True
            message = f"Failure injected by the test server: {status}"
            return status, {"X-Error-Message": message, **fault.headers}, _json_bytes({"error": message}), True
        request = Request(method, {k: v[-1] for k, v in parse_qs(url.query).items()}, headers, body)
        for methods, pattern, endpoint in self.routes:
            match = re.fullmatch(pattern, url.path)
            if method in methods.split() and match:
                params = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                if "kind" in match.groupdict():
                    params["kind"] = params.get("kind", "model")
                try:
                    result = endpoint(request, **params)
                except HubError as err:
                    error_headers = {"X-Error-Message": err.message}
                    if err.code:
                        error_headers["X-Error-Code"] = err.code
                    if err.commit:
                        error_headers["X-Repo-Commit"] = err.commit
                    return err.status, error_headers, _json_bytes({"error": err.message}), True
                except Exception as err:  # a bug in this server: answer 500 and fail the test
                    return 500, {}, _json_bytes({"error": f"test server crashed: {err!r}"}), False
                if isinstance(result, tuple):
                    return (*result, True)
                if isinstance(result, bytes):
                    return 200, {}, result, True
                return 200, {"Content-Type": "application/json"}, _json_bytes(result), True
        return 404, {}, _json_bytes({"error": f"test server: no route for {method} {url.path}"}), False


_TYPE = r"(?P<kind>model|dataset)s"
_PREFIX = r"(?:(?P<kind>dataset)s/)?"
_REPO = r"(?P<repo>[^/]+/[^/]+)"
_REV = r"(?P<rev>[^/]+)"


def _json_bytes(obj) -> bytes:
    return json.dumps(obj).encode()


def _file_entry(path: str, data: bytes) -> dict:
    """A tree entry as the Hub lists it: the git blob id, plus the LFS object for LFS files."""
    if not is_lfs(len(data), data):
        return {"type": "file", "path": path, "size": len(data), "oid": git_blob_sha1(data)}
    pointer = lfs_pointer(data)
    return {"type": "file", "path": path, "size": len(data), "oid": git_blob_sha1(pointer),
            "lfs": {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": len(pointer)}}


def _make_handler(server: HubServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the clients expect

        def _serve(self):
            body = self._read_body()  # always drained, or the next request on this connection breaks
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, answer_headers, answer, handled = server.handle(self.command, self.path, headers, body)
            with server.lock:
                server.requests.append(RecordedRequest(self.command, self.path, status or 0, handled))
            if status is None:  # an injected stall: no answer; wait for the client to give up, then hang up
                self.connection.settimeout(answer_headers["stall"])
                try:
                    self.connection.recv(1)  # returns b"" when the client closes its end
                except OSError:
                    pass
                self.close_connection = True
                return
            self.send_response(status)
            for name, value in answer_headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(answer)

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                    pass
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, format, *args):  # keep pytest output clean
            pass

    return Handler


class SilentServer:
    """A socket on 127.0.0.1 that accepts every connection and never sends a byte: the clients' requests can only
    time out. `connections` counts the accepted connections (a new one for each retried request)."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted: list[socket.socket] = []
        self.accept_times: list[float] = []
        self._closed = threading.Event()

    @property
    def connections(self) -> int:
        return len(self.accepted)

    def start(self) -> "SilentServer":
        threading.Thread(target=self._accept_forever, name="silent-hub", daemon=True).start()
        return self

    def _accept_forever(self) -> None:
        while not self._closed.is_set():
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(connection)  # kept open, never read from nor written to
            self.accept_times.append(time.monotonic())

    def stop(self) -> None:
        self._closed.set()
        self.sock.close()
        for connection in self.accepted:
            connection.close()

    def __enter__(self) -> "SilentServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class FullServer:
    """A listening socket that never accepts and whose queue is kept full by its own connections: on Linux a new
    connection's SYN is dropped, so connecting times out (a Hub address behind a firewall that drops packets)."""

    def __init__(self, fillers: int = 4):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.fillers = []
        for _ in range(fillers):  # fill the accept queue; the extra ones stay half-open and keep it busy
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            filler.connect_ex(self.sock.getsockname())
            self.fillers.append(filler)
        time.sleep(0.2)

    def stop(self) -> None:
        for filler in self.fillers:
            filler.close()
        self.sock.close()

    def __enter__(self) -> "FullServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
