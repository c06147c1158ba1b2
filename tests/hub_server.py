"""A small Hugging Face Hub-compatible HTTP server on 127.0.0.1, so the real ``huggingface_hub`` client can be tested
without the internet (the protocol the real client speaks is summarised in docs/testing.md).

Storage is in memory and git-less: repo id -> commits (40-hex ids), each a full ``{path: bytes}`` map, and branches
(name -> head commit id; ``main`` always exists). A revision is a branch name or a commit id. Like the real Hub,
``*.safetensors`` files go through the legacy LFS upload path (preupload answers "lfs"; the client then calls the
LFS batch API and PUTs the object; the commit names it by sha256) and are served with their sha256 as ETag; other
files are "regular" (inlined as base64 in the commit). Clients must run with ``HF_HUB_DISABLE_XET=1`` (no xet).
Tokens map to users; a user may write to its own namespace and to its organizations'.
``hub.on_request`` (a callable taking the method and path) runs after each request is answered: a test can push
a commit between two downloads with it.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

from http_server import hostile_answer

# token -> (user name, organizations)
USERS = {
    "hf_alice": ("alice", ("razor-team",)),
    "hf_bob": ("bob", ()),
}
_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
LFS_SUFFIXES = (".safetensors",)  # what .gitattributes of a new repo sends to LFS


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob: what the Hub reports as a regular file's ``oid`` and ``ETag``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Commit:
    oid: str
    summary: str
    author: str
    files: dict[str, bytes]


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: list[Commit] = field(default_factory=list)  # every commit of every branch, oldest first
    branches: dict[str, str] = field(default_factory=dict)  # branch name -> head commit id

    def resolve(self, revision: str) -> Commit | None:
        oid = self.branches.get(revision, revision)
        return next((c for c in self.commits if c.oid == oid), None)

    def card_data(self, commit: Commit) -> dict:
        """The YAML front matter of README.md (what the Hub returns as ``cardData``)."""
        text = commit.files.get("README.md", b"").decode()
        if not text.startswith("---"):
            return {}
        data = yaml.safe_load(text.split("---", 2)[1])
        return data if isinstance(data, dict) else {}


class HubError(Exception):
    """An HTTP error answer: status, ``X-Error-Code`` header and message."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code = status, code


class HubServer:
    """``with HubServer() as hub: HfApi(endpoint=hub.url, token="hf_alice")``; ``hub.requests`` counts requests."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path), to check what the client asked for
        self.lfs_objects: dict[str, bytes] = {}  # sha256 -> bytes, uploaded through the LFS batch API
        self.on_request: Callable[[str, str], None] | None = None
        self.file_headers: dict[str, str] = {}  # replace headers of every file answer: a hostile Hub in tests
        self.download_delay_s = 0.0  # wait before each file download (GET): lets concurrent clients overlap
        self.hostile: str | None = None  # answer file downloads (GET) like http_server.hostile_answer's kind
        self.hostile_head = False  # ... and HEAD requests of files too
        self.trickle_delay = 0.2
        self._lock = threading.Lock()
        self._commit_counter = 0
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> "HubServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    # -- storage -------------------------------------------------------------------------------------------------
    def new_commit(self, repo: Repo, branch: str, files: dict[str, bytes], summary: str, author: str) -> Commit:
        self._commit_counter += 1
        oid = hashlib.sha1(f"{repo.repo_id}:{self._commit_counter}".encode()).hexdigest()
        commit = Commit(oid, summary, author, files)
        repo.commits.append(commit)
        repo.branches[branch] = oid
        return commit

    def namespaces(self, user: str | None) -> tuple[str, ...]:
        for name, orgs in USERS.values():
            if name == user:
                return (name, *orgs)
        return ()

    def get_repo(self, repo_id: str, user: str | None) -> Repo:
        """The repo if this user may read it; private repos answer "not found" to others, as on the Hub."""
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and repo_id.split("/")[0] not in self.namespaces(user)):
            raise HubError(404 if user else 401, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def writable_repo(self, repo_id: str, user: str | None) -> Repo:
        repo = self.get_repo(repo_id, user)
        if repo_id.split("/")[0] not in self.namespaces(user):
            raise HubError(403, f"You don't have the rights to write to {repo_id}")
        return repo

    def commit_at(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    def model_info(self, repo: Repo, commit: Commit) -> dict:
        card = repo.card_data(commit)
        tags = [*card.get("tags", []), *([card["library_name"]] if "library_name" in card else [])]
        return {
            "id": repo.repo_id, "modelId": repo.repo_id, "author": repo.repo_id.split("/")[0], "sha": commit.oid,
            "private": repo.private, "tags": tags, "library_name": card.get("library_name"), "cardData": card,
            "siblings": [{"rfilename": path} for path in sorted(commit.files)],
            "lastModified": "2026-01-01T00:00:00.000Z", "downloads": 0, "likes": 0,
        }


def validate_card_yaml(content: str) -> list[str]:
    """What the Hub's ``/api/validate-yaml`` checks that razorzoo cards touch: the front matter is a mapping,
    ``base_model`` holds repo ids, and every ``model-index`` entry has a name and results with task/metrics."""
    if not content.startswith("---"):
        return []
    try:
        data = yaml.safe_load(content.split("---", 2)[1])
    except yaml.YAMLError as exc:
        return [f"invalid YAML: {exc}"]
    if not isinstance(data, dict):
        return ["metadata must be a mapping"]
    errors = []
    base = data.get("base_model", [])
    for value in [base] if isinstance(base, str) else base:
        if not isinstance(value, str) or not _REPO_ID.match(value):
            errors.append(f'"base_model" must be a model id (owner/name), got {value!r}')
    for entry in data.get("model-index", []):
        if not isinstance(entry, dict) or "name" not in entry or not entry.get("results"):
            errors.append('"model-index" entries need a "name" and "results"')
            continue
        for result in entry["results"]:
            if "task" not in result or not all("type" in m and "value" in m for m in result.get("metrics", [])):
                errors.append('"model-index" results need a "task" and metrics with "type" and "value"')
    return errors


def _make_handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    routes = []  # (method, compiled regex, handler)

    def route(method: str, pattern: str):
        def register(fn):
            routes.append((method, re.compile(pattern + "$"), fn))
            return fn
        return register

    repo = r"(?P<repo>[\w.-]+/[\w.-]+)"

    @route("GET", r"/api/whoami-v2")
    def whoami(req, user):
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        return 200, {"type": "user", "name": user, "orgs": [{"name": o} for o in hub.namespaces(user)[1:]],
                     "auth": {"accessToken": {"role": "write"}}}

    @route("POST", r"/api/repos/create")
    def create_repo(req, user):
        body = req.json_body()
        namespace = body.get("organization") or user
        repo_id = f"{namespace}/{body['name']}"
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        url = f"{hub.url}/{repo_id}"
        if repo_id in hub.repos:
            return 409, {"error": "You already created this model repo", "url": url}
        if namespace not in hub.namespaces(user):
            raise HubError(403, f"You don't have the rights to create a model under the namespace {namespace!r}")
        private = body.get("private") or body.get("visibility") == "private"
        hub.repos[repo_id] = new = Repo(repo_id, bool(private))
        hub.new_commit(new, "main", {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"},
                       "initial commit", user)
        return 200, {"url": url, "name": repo_id}

    @route("POST", rf"/api/models/{repo}/preupload/(?P<rev>[^/]+)")
    def preupload(req, user, repo, rev):
        files = hub.commit_at(hub.writable_repo(repo, user), rev).files
        answer = []
        for f in req.json_body()["files"]:
            lfs = f["path"].endswith(LFS_SUFFIXES)
            stored = files.get(f["path"])
            oid = None if stored is None else hashlib.sha256(stored).hexdigest() if lfs else git_blob_sha1(stored)
            answer.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                           "oid": oid})
        return 200, {"files": answer}

    @route("POST", rf"/{repo}\.git/info/lfs/objects/batch")
    def lfs_batch(req, user, repo):
        hub.writable_repo(repo, user)
        objects = []
        for obj in req.json_body()["objects"]:
            answer = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in hub.lfs_objects:  # no "actions": the object is already there
                answer["actions"] = {"upload": {"href": f"{hub.url}/lfs-upload/{obj['oid']}"}}
            objects.append(answer)
        return 200, {"transfer": "basic", "objects": objects}

    @route("PUT", r"/lfs-upload/(?P<oid>[0-9a-f]{64})")
    def lfs_upload(req, user, oid):
        if hashlib.sha256(req.body()).hexdigest() != oid:
            raise HubError(400, "uploaded bytes do not match their sha256")
        hub.lfs_objects[oid] = req.body()
        return 200, {}

    @route("POST", rf"/api/models/{repo}/branch/(?P<branch>[^/]+)")
    def create_branch(req, user, repo, branch):
        target = hub.writable_repo(repo, user)
        if branch in target.branches:
            raise HubError(409, f"Branch {branch} already exists")
        target.branches[branch] = hub.commit_at(target, req.json_body().get("startingPoint", "main")).oid
        return 200, {}

    @route("POST", rf"/api/models/{repo}/commit/(?P<rev>[^/]+)")
    def commit(req, user, repo, rev):
        target = hub.writable_repo(repo, user)
        if rev not in target.branches:  # commits go on top of a branch, never onto a commit id
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        files = dict(hub.commit_at(target, rev).files)
        summary = ""
        for line in req.body().splitlines():
            item = json.loads(line)
            value = item["value"]
            if item["key"] == "header":
                summary = value["summary"]
            elif item["key"] == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif item["key"] == "lfsFile":
                if value["oid"] not in hub.lfs_objects:
                    raise HubError(400, f"LFS object {value['oid']} of {value['path']} was never uploaded")
                files[value["path"]] = hub.lfs_objects[value["oid"]]
            elif item["key"] == "deletedFile":
                files.pop(value["path"], None)
            else:
                raise HubError(400, f"unsupported commit operation {item['key']!r}")
        new = hub.new_commit(target, rev, files, summary, user)
        return 200, {"commitUrl": f"{hub.url}/{repo}/commit/{new.oid}", "commitOid": new.oid,
                     "pullRequestUrl": None}

    @route("POST", r"/api/validate-yaml")
    def validate_yaml(req, user):
        errors = validate_card_yaml(req.json_body()["content"])
        return (400 if errors else 200), {"errors": [{"message": e} for e in errors], "warnings": []}

    @route("GET", rf"/api/models/{repo}(?:/revision/(?P<rev>[^/]+))?")
    def model_info(req, user, repo, rev):
        found = hub.get_repo(repo, user)
        return 200, hub.model_info(found, hub.commit_at(found, rev or "main"))

    @route("GET", rf"/api/models/{repo}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?")
    def tree(req, user, repo, rev, path):
        files = hub.commit_at(hub.get_repo(repo, user), rev).files
        prefix = f"{path.rstrip('/')}/" if path else ""
        return 200, [{"type": "file", "path": p, "size": len(d), "oid": git_blob_sha1(d),
                      **({"lfs": {"oid": hashlib.sha256(d).hexdigest(), "size": len(d)}}
                         if p.endswith(LFS_SUFFIXES) else {})}
                     for p, d in sorted(files.items()) if p.startswith(prefix)]

    @route("GET", rf"/api/models/{repo}/refs")
    def refs(req, user, repo):
        branches = hub.get_repo(repo, user).branches
        return 200, {"branches": [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": oid}
                                  for b, oid in branches.items()], "tags": [], "converts": []}

    @route("GET", r"/api/models")
    def list_models(req, user):
        query = parse_qs(urlsplit(req.path).query)
        filters, author = query.get("filter", []), query.get("author", [None])[0]
        listed = []
        for repo_id in sorted(hub.repos):
            try:
                found = hub.get_repo(repo_id, user)
            except HubError:
                continue  # private and not ours
            info = hub.model_info(found, hub.commit_at(found, "main"))
            if all(f in info["tags"] for f in filters) and author in (None, info["author"]):
                listed.append(info)
        return 200, listed

    @route("HEAD", rf"/{repo}/resolve/(?P<rev>[^/]+)/(?P<path>.+)")
    @route("GET", rf"/{repo}/resolve/(?P<rev>[^/]+)/(?P<path>.+)")
    def resolve(req, user, repo, rev, path):
        commit = hub.commit_at(hub.get_repo(repo, user), rev)
        if path not in commit.files:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        data = commit.files[path]
        if req.command == "GET" and hub.download_delay_s:
            time.sleep(hub.download_delay_s)
        status, body = 200, data
        match = re.match(r"bytes=(\d+)-(\d*)", req.headers.get("Range", ""))
        if match and not hub.hostile:  # a hostile answer is about the whole file
            start, end = int(match[1]), int(match[2] or len(data) - 1)
            status, body = 206, data[start:end + 1]
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{git_blob_sha1(data)}"', "Accept-Ranges": "bytes"}
        if path.endswith(LFS_SUFFIXES):  # the Hub names LFS files by their sha256
            headers["ETag"] = headers["X-Linked-Etag"] = f'"{hashlib.sha256(data).hexdigest()}"'
            headers["X-Linked-Size"] = str(len(data))
        return status, body, {**headers, **hub.file_headers}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # keep test output quiet
            pass

        def body(self) -> bytes:
            return self._body

        def json_body(self) -> dict:
            return json.loads(self._body or b"{}")

        def user(self) -> str | None:
            """The token's user; None without a token; a token nobody owns is refused (401) everywhere."""
            auth = self.headers.get("Authorization", "")
            if not auth:
                return None
            if auth.removeprefix("Bearer ") not in USERS:
                raise HubError(401, "Invalid credentials in Authorization header")
            return USERS[auth.removeprefix("Bearer ")][0]

        def dispatch(self) -> None:
            path = unquote(urlsplit(self.path).path)
            # read the body first: an error answer must not leave it in the kept-alive connection
            self._body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with hub._lock:
                hub.requests.append((self.command, path))
            headers: dict[str, str] = {}
            try:
                for method, pattern, fn in routes:
                    match = pattern.match(path)
                    if method == self.command and match:
                        with hub._lock:
                            status, body, *extra = fn(self, self.user(), **match.groupdict())
                        headers = extra[0] if extra else {}
                        break
                else:
                    raise HubError(404, f"no route for {self.command} {path}")
            except HubError as err:
                status, body = err.status, {"error": str(err)}
                if err.code:
                    headers["X-Error-Code"] = err.code
                headers["X-Error-Message"] = str(err)
            except Exception as err:  # a bug in this server: answer instead of dropping the connection
                status, body = 500, {"error": f"hub_server: {err!r}"}
            if hub.hostile and status < 300 and "X-Repo-Commit" in headers and (
                    self.command == "GET" or hub.hostile_head):
                return hostile_answer(self, hub.hostile, body, headers, hub.trickle_delay)
            if not isinstance(body, bytes):
                body, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            self.wfile.flush()
            if hub.on_request is not None:
                hub.on_request(self.command, path)

        do_GET = do_POST = do_HEAD = do_PUT = dispatch

    return Handler
