"""The smallest Hub-compatible server the huggingface_hub client needs, on Flask, for tests on 127.0.0.1.

Covers whoami, create_repo, create_branch, preupload + commit (files sent inline: every file gets uploadMode
"regular", so no LFS storage is involved), tags and refs, repo info, tree listing and file download by branch,
tag or commit. Writes need a known token; a namespace that is not the token's user gets 403. `/_control/fail`
makes the next N requests answer 500, for failure tests.

    python tests/hub_server.py --port 8765
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import threading
from dataclasses import dataclass, field

from flask import Flask, Response, jsonify, request
from werkzeug.serving import make_server

TOKENS = {"hf_alice_secret_token_123": "alice", "hf_bob_secret_token_456": "bob"}


@dataclass
class Repo:
    private: bool = False
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # oid -> files
    refs: dict[str, str] = field(default_factory=dict)  # branch -> oid
    tags: dict[str, str] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> str | None:
        return self.refs.get(revision) or self.tags.get(revision) or (revision if revision in self.commits else None)


class HubState:
    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.failures_left = 0
        self.requests: list[str] = []
        self.lock = threading.Lock()


def commit_oid(parent: str, files: dict[str, bytes], message: str) -> str:
    digest = hashlib.sha1(parent.encode() + message.encode())
    for path in sorted(files):
        digest.update(path.encode() + hashlib.sha1(files[path]).digest())
    return digest.hexdigest()


def create_app(state: HubState) -> Flask:
    app = Flask("hub-test-server")

    def user() -> str | None:
        header = request.headers.get("authorization", "")
        return TOKENS.get(header.removeprefix("Bearer ").strip())

    def error(status: int, message: str, code: str | None = None) -> Response:
        response = jsonify({"error": message})
        response.status_code = status
        if code:
            response.headers["X-Error-Code"] = code
        return response

    def writable(repo_id: str) -> Response | None:
        name = user()
        if name is None:
            return error(401, "Invalid credentials in Authorization header")
        if repo_id.split("/")[0] != name:
            return error(403, f"You don't have the rights to write to {repo_id}")
        return None

    @app.before_request
    def inject_failures():
        state.requests.append(f"{request.method} {request.path}")
        if request.path.startswith("/_control"):
            return None
        with state.lock:
            if state.failures_left > 0:
                state.failures_left -= 1
                return error(500, "injected failure")
        return None

    @app.post("/_control/fail")
    def control_fail():
        state.failures_left = int(request.json["count"])
        return jsonify({"failures_left": state.failures_left})

    @app.get("/api/whoami-v2")
    def whoami():
        name = user()
        if name is None:
            return error(401, "Invalid credentials in Authorization header")
        return jsonify({"type": "user", "name": name, "auth": {"accessToken": {"role": "write"}}})

    @app.post("/api/repos/create")
    def create_repo():
        body = request.json
        repo_id = f"{body.get('organization') or user()}/{body['name']}"
        denied = writable(repo_id)
        if denied:
            return denied
        if repo_id in state.repos:
            conflict = jsonify({"error": "You already created this model repo", "url": f"{request.host_url}{repo_id}"})
            conflict.status_code = 409
            return conflict
        repo = Repo(private=bool(body.get("private") or body.get("visibility") == "private"))
        oid = commit_oid("", {}, "initial commit")
        repo.commits[oid], repo.refs["main"] = {}, oid
        state.repos[repo_id] = repo
        return jsonify({"url": f"{request.host_url}{repo_id}", "name": repo_id})

    def find(ns: str, name: str) -> tuple[str, Repo | None]:
        return f"{ns}/{name}", state.repos.get(f"{ns}/{name}")

    def find_commit(ns: str, name: str, revision: str) -> tuple[str, Repo | None, str | None, Response | None]:
        """The repo and the commit a branch, tag or sha names, or the 404 saying which is missing."""
        repo_id, repo = find(ns, name)
        if repo is None:
            return repo_id, None, None, error(404, "Repository not found", "RepoNotFound")
        oid = repo.resolve(revision)
        if oid is None:
            return repo_id, repo, None, error(404, "Revision not found", "RevisionNotFound")
        return repo_id, repo, oid, None

    def find_writable(ns: str, name: str) -> tuple[str, Repo | None, Response | None]:
        """The repo to write to, or the response refusing it (401, 403, 404)."""
        repo_id, repo = find(ns, name)
        denied = writable(repo_id)
        if denied or repo is None:
            return repo_id, None, denied or error(404, "Repository not found", "RepoNotFound")
        return repo_id, repo, None

    @app.post("/api/models/<ns>/<name>/branch/<path:branch>")
    def create_branch(ns, name, branch):
        _, repo, refused = find_writable(ns, name)
        if refused:
            return refused
        if branch in repo.refs:
            return error(409, "Reference already exists")
        repo.refs[branch] = repo.refs["main"]
        return jsonify({})

    @app.post("/api/models/<ns>/<name>/preupload/<path:revision>")
    def preupload(ns, name, revision):
        files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in request.json["files"]]
        return jsonify({"files": files, "commitOid": None})

    @app.post("/api/validate-yaml")
    def validate_yaml():
        return jsonify({"errors": [], "warnings": []})

    @app.post("/api/models/<ns>/<name>/commit/<path:revision>")
    def commit(ns, name, revision):
        repo_id, repo, refused = find_writable(ns, name)
        if refused:
            return refused
        parent = repo.resolve(revision)
        if parent is None:
            return error(404, f"Revision {revision} not found", "RevisionNotFound")
        files = dict(repo.commits[parent])
        summary = ""
        for line in request.get_data().decode().splitlines():
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                summary = value.get("summary", "")
            elif key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key in ("deletedFile", "deletedFolder"):
                files = {p: c for p, c in files.items() if p != value["path"] and not p.startswith(value["path"] + "/")}
        oid = commit_oid(parent, files, summary)
        repo.commits[oid], repo.messages[oid] = files, summary
        repo.refs[revision if revision in repo.refs else "main"] = oid
        return jsonify(
            {"commitUrl": f"{request.host_url}{repo_id}/commit/{oid}", "commitOid": oid, "pullRequestUrl": None}
        )

    @app.post("/api/models/<ns>/<name>/tag/<path:revision>")
    def create_tag(ns, name, revision):
        _, repo, refused = find_writable(ns, name)
        if refused:
            return refused
        tag = request.json["tag"]
        if tag in repo.tags:
            return error(409, "Tag already exists")
        repo.tags[tag] = repo.resolve(revision)
        return jsonify({})

    @app.get("/api/models/<ns>/<name>/refs")
    def refs(ns, name):
        _, repo = find(ns, name)
        if repo is None:
            return error(404, "Repository not found", "RepoNotFound")
        entries = lambda refs, kind: [  # noqa: E731
            {"name": n, "ref": f"refs/{kind}/{n}", "targetCommit": o} for n, o in refs.items()
        ]
        return jsonify({"branches": entries(repo.refs, "heads"), "tags": entries(repo.tags, "tags"), "converts": []})

    @app.get("/api/models/<ns>/<name>/commits/<path:revision>")
    def commits(ns, name, revision):
        _, repo = find(ns, name)
        if repo is None:
            return error(404, "Repository not found", "RepoNotFound")
        return jsonify(
            [{"id": oid, "title": message, "message": message, "authors": [], "date": "2026-01-01T00:00:00.000Z"}
             for oid, message in reversed(list(repo.messages.items()))]
        )  # fmt: skip

    @app.get("/api/models/<ns>/<name>")
    @app.get("/api/models/<ns>/<name>/revision/<path:revision>")
    def info(ns, name, revision="main"):
        repo_id, repo, oid, missing = find_commit(ns, name, revision)
        if missing:
            return missing
        siblings = [{"rfilename": p} for p in sorted(repo.commits[oid])]
        return jsonify({"id": repo_id, "modelId": repo_id, "sha": oid, "private": repo.private, "siblings": siblings})

    @app.get("/api/models/<ns>/<name>/tree/<revision>")
    @app.get("/api/models/<ns>/<name>/tree/<revision>/<path:subpath>")
    def tree(ns, name, revision, subpath=""):
        _, repo, oid, missing = find_commit(ns, name, revision)
        if missing:
            return missing
        prefix = f"{subpath.strip('/')}/" if subpath else ""
        files = repo.commits[oid]
        entries = [
            {"type": "file", "path": p, "size": len(c), "oid": hashlib.sha1(c).hexdigest()}
            for p, c in sorted(files.items())
            if p.startswith(prefix)
        ]
        return jsonify(entries)

    @app.route("/<ns>/<name>/resolve/<revision>/<path:filename>", methods=["GET", "HEAD"])
    def resolve(ns, name, revision, filename):
        _, repo, oid, missing = find_commit(ns, name, revision)
        if missing:
            return missing
        content = repo.commits[oid].get(filename)
        if content is None:
            return error(404, "Entry not found", "EntryNotFound")
        response = Response(content if request.method == "GET" else b"", mimetype="application/octet-stream")
        response.headers.update(
            {
                "X-Repo-Commit": oid,
                "ETag": f'"{hashlib.sha1(content).hexdigest()}"',
                "Content-Length": str(len(content)),
            }
        )
        return response

    return app


class HubServer:
    """A server on 127.0.0.1 in a background thread; `stop()` takes it down (the 'Hub is down' case)."""

    def __init__(self, port: int = 0):
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self.state = HubState()
        self.server = make_server("127.0.0.1", port, create_app(self.state), threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> HubServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    HubServer(parser.parse_args().port).server.serve_forever()
