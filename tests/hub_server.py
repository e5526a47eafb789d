"""The smallest Hub-compatible server the huggingface_hub client needs, on Flask, for tests on 127.0.0.1.

It answers what the client calls for whoami, create_repo, create_branch, preupload + commit, the git-LFS
batch/upload/verify exchange, tags and refs, repo info, commits, tree listing and downloads by branch, tag or
commit sha. Files at or above `lfs_threshold` bytes, and weights and images of any size, are LFS files, as on the
Hub; the rest travel base64-encoded inside the commit.

Xet storage, which the client prefers when `hf_xet` is installed, is a separate content-addressed service this
server does not emulate: clients talking to it need `HF_HUB_DISABLE_XET=1` (the tests set it), which makes them
use the git-LFS path above.

Writes need a known token (401 otherwise) for the namespace of that token's user (403 otherwise); private repos
are invisible without their owner's token. `HubState.fail_next(n)` (or `POST /_control/fail {"count": n}`) makes
the next n requests answer 500, `delay_seconds` slows every answer down, `HubServer.stop()` takes the server
down.

    python tests/hub_server.py --port 8765
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field

import yaml
from flask import Flask, Response, jsonify, request
from werkzeug.serving import make_server

TOKENS = {"hf_alice_secret_token_123": "alice", "hf_bob_secret_token_456": "bob"}
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".png", ".jpg")


def git_blob_oid(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True)
class StoredFile:
    content: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def oid(self) -> str:
        """The git oid the Hub reports: of the content, or of the LFS pointer for LFS files."""
        return git_blob_oid(lfs_pointer(self.sha256, len(self.content)) if self.lfs else self.content)


@dataclass
class Commit:
    files: dict[str, StoredFile]
    message: str
    parent: str | None


@dataclass
class Repo:
    owner: str
    private: bool = False
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> str | None:
        """The commit a branch, tag or full commit sha names."""
        return (
            self.branches.get(revision) or self.tags.get(revision) or (revision if revision in self.commits else None)
        )

    def add_commit(self, branch: str, files: dict[str, StoredFile], message: str) -> str:
        parent = self.branches.get(branch)
        digest = hashlib.sha1(f"{parent}\n{message}\n".encode())
        for path in sorted(files):
            digest.update(f"{path} {files[path].oid}\n".encode())
        oid = digest.hexdigest()
        self.commits[oid] = Commit(files, message, parent)
        self.branches[branch] = oid
        return oid

    def history(self, revision: str) -> list[tuple[str, Commit]]:
        oid, found = self.resolve(revision), []
        while oid is not None:
            found.append((oid, self.commits[oid]))
            oid = self.commits[oid].parent
        return found


class HubState:
    def __init__(self, lfs_threshold: int = 10_000) -> None:
        self.repos: dict[str, Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.lfs_threshold = lfs_threshold
        self.failures_left = 0
        self.delay_seconds = 0.0
        self.requests: list[str] = []
        self.lock = threading.Lock()

    def fail_next(self, count: int) -> None:
        with self.lock:
            self.failures_left = count

    def commit_messages(self, repo_id: str, revision: str = "main") -> list[str]:
        """Newest first."""
        return [commit.message for _, commit in self.repos[repo_id].history(revision)]

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        repo = self.repos[repo_id]
        return {path: f.content for path, f in repo.commits[repo.resolve(revision)].files.items()}


def create_app(state: HubState) -> Flask:
    app = Flask("hub-test-server")

    def error(status: int, message: str, code: str | None = None) -> Response:
        response = jsonify({"error": message})
        response.status_code = status
        if code:
            response.headers["X-Error-Code"] = code
        return response

    def user() -> str | None:
        return TOKENS.get(request.headers.get("authorization", "").removeprefix("Bearer ").strip())

    def refuse_write(repo_id: str) -> Response | None:
        name = user()
        if name is None:
            return error(401, "Invalid credentials in Authorization header")
        if repo_id.split("/")[0] != name:
            return error(403, f"You don't have the rights to write to {repo_id}")
        return None

    def readable(ns: str, name: str) -> tuple[str, Repo | None]:
        repo_id = f"{ns}/{name}"
        repo = state.repos.get(repo_id)
        if repo is None or (repo.private and user() != repo.owner):
            return repo_id, None
        return repo_id, repo

    def find_commit(ns: str, name: str, revision: str) -> tuple[str, Repo | None, str | None, Response | None]:
        """The repo and the commit a revision names, or the 404 saying which one is missing."""
        repo_id, repo = readable(ns, name)
        if repo is None:
            return repo_id, None, None, error(404, "Repository not found", "RepoNotFound")
        oid = repo.resolve(revision)
        if oid is None:
            return repo_id, repo, None, error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return repo_id, repo, oid, None

    def find_writable(ns: str, name: str) -> tuple[str, Repo | None, Response | None]:
        repo_id = f"{ns}/{name}"
        refused = refuse_write(repo_id)
        repo = state.repos.get(repo_id)
        if refused or repo is None:
            return repo_id, None, refused or error(404, "Repository not found", "RepoNotFound")
        return repo_id, repo, None

    @app.before_request
    def record_and_fail():
        state.requests.append(f"{request.method} {request.path}")
        if request.path.startswith("/_control"):
            return None
        time.sleep(state.delay_seconds)
        with state.lock:
            if state.failures_left > 0:
                state.failures_left -= 1
                return error(500, "Internal Error (injected)")
        return None

    @app.post("/_control/fail")
    def control_fail():
        state.fail_next(int(request.json["count"]))
        return jsonify({"failures_left": state.failures_left})

    @app.get("/api/whoami-v2")
    def whoami():
        name = user()
        if name is None:
            return error(401, "Invalid credentials in Authorization header")
        return jsonify({"type": "user", "name": name, "orgs": [], "auth": {"accessToken": {"role": "write"}}})

    @app.post("/api/repos/create")
    def create_repo():
        body = request.json
        repo_id = f"{body.get('organization') or user()}/{body['name']}"
        refused = refuse_write(repo_id)
        if refused:
            return refused
        url = f"{request.host_url}{repo_id}"
        if repo_id in state.repos:
            conflict = jsonify({"error": "You already created this model repo", "url": url})
            conflict.status_code = 409
            return conflict
        private = bool(body.get("private")) or body.get("visibility") == "private"
        repo = state.repos[repo_id] = Repo(owner=repo_id.split("/")[0], private=private)
        repo.add_commit("main", {".gitattributes": StoredFile(b"*.safetensors filter=lfs\n", False)}, "initial commit")
        return jsonify({"url": url, "name": repo_id})

    @app.post("/api/models/<ns>/<name>/branch/<path:branch>")
    def create_branch(ns, name, branch):
        _, repo, refused = find_writable(ns, name)
        if refused:
            return refused
        if branch in repo.branches:
            return error(409, "Reference already exists")
        start = (request.get_json(silent=True) or {}).get("startingPoint") or "main"
        repo.branches[branch] = repo.resolve(start)
        return jsonify({})

    @app.post("/api/models/<ns>/<name>/preupload/<path:revision>")
    def preupload(ns, name, revision):
        _, repo, refused = find_writable(ns, name)
        if refused:
            return refused
        current = repo.commits[repo.resolve(revision) or repo.branches["main"]].files
        answers = []
        for entry in request.json["files"]:
            lfs = entry["size"] >= state.lfs_threshold or entry["path"].endswith(LFS_SUFFIXES)
            existing = current.get(entry["path"])
            # the client skips files whose oid is unchanged: sha256 for LFS files, the git blob sha1 otherwise
            oid = None if existing is None else existing.sha256 if existing.lfs else git_blob_oid(existing.content)
            mode = "lfs" if lfs else "regular"
            answers.append({"path": entry["path"], "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        return jsonify({"files": answers, "commitOid": repo.resolve(revision)})

    @app.post("/<ns>/<name>.git/info/lfs/objects/batch")
    def lfs_batch(ns, name):
        _, _, refused = find_writable(ns, name)
        if refused:
            return refused
        body = request.json
        if body.get("operation") != "upload" or "basic" not in body.get("transfers", ["basic"]):
            return error(400, "only basic uploads are served here")
        objects = []
        for obj in body["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in state.lfs_objects:
                entry["actions"] = {
                    "upload": {"href": f"{request.host_url}_lfs/{obj['oid']}?size={obj['size']}"},
                    "verify": {"href": f"{request.host_url}{ns}/{name}.git/info/lfs/objects/verify"},
                }
            objects.append(entry)
        return jsonify({"transfer": "basic", "objects": objects})

    @app.put("/_lfs/<oid>")
    def lfs_upload(oid):
        content = request.get_data()
        if hashlib.sha256(content).hexdigest() != oid or len(content) != int(request.args["size"]):
            return error(400, "uploaded content does not match its oid and size")
        state.lfs_objects[oid] = content
        return Response(status=200)

    @app.post("/<ns>/<name>.git/info/lfs/objects/verify")
    def lfs_verify(ns, name):
        body = request.json
        content = state.lfs_objects.get(body["oid"])
        if content is None or len(content) != body["size"]:
            return error(404, "object not uploaded")
        return jsonify({"success": True})

    @app.post("/api/validate-yaml")
    def validate_yaml():
        content = (request.get_json(silent=True) or {}).get("content", "")
        try:
            yaml.safe_load(content.split("---")[1] if content.startswith("---") else "")
        except (yaml.YAMLError, IndexError) as err:
            return error(400, f"Invalid YAML metadata: {err}")
        return jsonify({"errors": [], "warnings": []})

    @app.post("/api/models/<ns>/<name>/commit/<path:revision>")
    def commit(ns, name, revision):
        repo_id, repo, refused = find_writable(ns, name)
        if refused:
            return refused
        if revision not in repo.branches:
            return error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        files = dict(repo.commits[repo.branches[revision]].files)
        summary = ""
        for line in request.get_data().decode().splitlines():
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                summary = value.get("summary", "")
                parent = value.get("parentCommit")
                if parent and parent != repo.branches[revision]:
                    return error(412, "A commit has happened since. Please refresh and try again.")
            elif key == "file":
                files[value["path"]] = StoredFile(base64.b64decode(value["content"]), False)
            elif key == "lfsFile":
                if value["oid"] not in state.lfs_objects:
                    return error(422, f"LFS object {value['oid']} for {value['path']} was never uploaded")
                files[value["path"]] = StoredFile(state.lfs_objects[value["oid"]], True)
            elif key in ("deletedFile", "deletedFolder"):
                gone = value["path"].rstrip("/")
                files = {p: f for p, f in files.items() if p != gone and not p.startswith(gone + "/")}
        oid = repo.add_commit(revision, files, summary)
        url = f"{request.host_url}{repo_id}/commit/{oid}"
        return jsonify({"commitUrl": url, "commitOid": oid, "pullRequestUrl": None})

    @app.post("/api/models/<ns>/<name>/tag/<path:revision>")
    def create_tag(ns, name, revision):
        _, repo, refused = find_writable(ns, name)
        if refused:
            return refused
        tag, target = request.json["tag"], repo.resolve(revision)
        if target is None:
            return error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        if tag in repo.tags:
            return error(409, "Tag already exists")
        repo.tags[tag] = target
        return jsonify({})

    @app.get("/api/models/<ns>/<name>/refs")
    def refs(ns, name):
        _, repo = readable(ns, name)
        if repo is None:
            return error(404, "Repository not found", "RepoNotFound")

        def entries(refs: dict[str, str], kind: str) -> list[dict]:
            return [{"name": n, "ref": f"refs/{kind}/{n}", "targetCommit": oid} for n, oid in refs.items()]

        return jsonify(
            {"branches": entries(repo.branches, "heads"), "tags": entries(repo.tags, "tags"), "converts": []}
        )

    @app.get("/api/models/<ns>/<name>/commits/<path:revision>")
    def commits(ns, name, revision):
        _, repo, _, missing = find_commit(ns, name, revision)
        if missing:
            return missing
        date = "2026-01-01T00:00:00.000Z"
        return jsonify(
            [
                {"id": oid, "title": c.message, "message": c.message, "authors": [], "date": date}
                for oid, c in repo.history(revision)
            ]
        )

    @app.get("/api/models/<ns>/<name>")
    @app.get("/api/models/<ns>/<name>/revision/<path:revision>")
    def info(ns, name, revision="main"):
        repo_id, repo, oid, missing = find_commit(ns, name, revision)
        if missing:
            return missing
        siblings = [{"rfilename": p} for p in sorted(repo.commits[oid].files)]
        return jsonify({"id": repo_id, "modelId": repo_id, "sha": oid, "private": repo.private, "siblings": siblings})

    @app.get("/api/models/<ns>/<name>/tree/<revision>")
    @app.get("/api/models/<ns>/<name>/tree/<revision>/<path:subpath>")
    def tree(ns, name, revision, subpath=""):
        _, repo, oid, missing = find_commit(ns, name, revision)
        if missing:
            return missing
        prefix = f"{subpath.strip('/')}/" if subpath else ""
        entries = []
        for path, stored in sorted(repo.commits[oid].files.items()):
            if not path.startswith(prefix):
                continue
            entry = {"type": "file", "path": path, "size": len(stored.content), "oid": stored.oid}
            if stored.lfs:
                pointer = lfs_pointer(stored.sha256, len(stored.content))
                entry["lfs"] = {"oid": stored.sha256, "size": len(stored.content), "pointerSize": len(pointer)}
            entries.append(entry)
        return jsonify(entries)

    @app.route("/<ns>/<name>/resolve/<revision>/<path:filename>", methods=["GET", "HEAD"])
    def resolve(ns, name, revision, filename):
        _, repo, oid, missing = find_commit(ns, name, revision)
        if missing:
            return missing
        stored = repo.commits[oid].files.get(filename)
        if stored is None:
            return error(404, "Entry not found", "EntryNotFound")
        response = Response(stored.content if request.method == "GET" else b"", mimetype="application/octet-stream")
        response.headers.update(
            {"X-Repo-Commit": oid, "ETag": f'"{stored.oid}"', "Content-Length": str(len(stored.content))}
        )
        if stored.lfs:
            response.headers.update({"X-Linked-Etag": f'"{stored.sha256}"', "X-Linked-Size": str(len(stored.content))})
        return response

    return app


class HubServer:
    """A server on 127.0.0.1 in a background thread; `stop()` takes it down (the 'Hub is down' case)."""

    def __init__(self, port: int = 0, lfs_threshold: int = 10_000):
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self.state = HubState(lfs_threshold)
        self.server = make_server("127.0.0.1", port, create_app(self.state), threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def start(self) -> HubServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--lfs_threshold", type=int, default=10_000, help="Bytes from which a file is stored as LFS.")
    options = parser.parse_args()
    server = HubServer(options.port, options.lfs_threshold)
    print(f"serving a Hub-compatible API on {server.url} for users {', '.join(TOKENS.values())}")
    server.server.serve_forever()
