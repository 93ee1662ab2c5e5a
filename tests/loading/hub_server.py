"""A test Hugging Face Hub on 127.0.0.1: the part of the Hub's HTTP API that huggingface_hub's downloads use.

Repos live in memory as {repo id: {"refs": {branch or tag: commit}, "commits": {commit: {file: path}}}}.
- HEAD/GET /{repo}/resolve/{revision}/{file}: the file, with X-Repo-Commit and ETag headers.
- GET /api/models/{repo}[/revision/{revision}]: {"id", "sha", "siblings": [{"rfilename"}]}.
- 404s carry X-Error-Code RepoNotFound / RevisionNotFound / EntryNotFound, as the Hub's do.
Every request is logged (method, path) so that tests can check which files were fetched.
"""
import hashlib
import json
import os
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class TestHub:
    __test__ = False  # not a test class
    def __init__(self):
        self.repos = {}
        self.requests = []
        self._server = None

    # -- content ------------------------------------------------------------------------------------------

    def add_commit(self, repo_id, directory, refs=("main",)):
        """Publish the files of `directory` as a new commit of `repo_id`, pointed to by `refs`; returns its sha."""
        files = {name: os.path.join(directory, name) for name in sorted(os.listdir(directory))
                 if os.path.isfile(os.path.join(directory, name))}
        digest = hashlib.sha1()
        for name, path in files.items():
            digest.update(name.encode())
            with open(path, "rb") as f:
                digest.update(f.read())
        repo = self.repos.setdefault(repo_id, {"refs": {}, "commits": {}})
        sha = digest.hexdigest()
        repo["commits"][sha] = files
        for ref in refs:
            repo["refs"][ref] = sha
        return sha

    def resolve(self, repo_id, revision):
        """(error code or None, commit) of a revision."""
        repo = self.repos.get(repo_id)
        if repo is None:
            return "RepoNotFound", None
        sha = repo["refs"].get(revision, revision if revision in repo["commits"] else None)
        return (None, sha) if sha else ("RevisionNotFound", None)

    # -- server -------------------------------------------------------------------------------------------

    def start(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self._answer(body=False)

            def do_GET(self):
                self._answer(body=True)

            def _error(self, code, status=404):
                self.send_response(status)
                self.send_header("X-Error-Code", code)
                self.send_header("X-Error-Message", code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _answer(self, body):
                path = urllib.parse.unquote(urllib.parse.urlparse(self.path).path)
                hub.requests.append((self.command, path))
                parts = path.strip("/").split("/")
                if parts[:2] == ["api", "models"]:
                    repo_id = "/".join(parts[2:4])
                    revision = parts[5] if len(parts) > 5 and parts[4] == "revision" else "main"
                    error, sha = hub.resolve(repo_id, revision)
                    if error:
                        return self._error(error)
                    data = json.dumps({"id": repo_id, "modelId": repo_id, "sha": sha, "private": False,
                                       "siblings": [{"rfilename": n} for n in hub.repos[repo_id]["commits"][sha]]})
                    return self._send(data.encode(), {"Content-Type": "application/json"}, body)
                if len(parts) >= 5 and parts[2] == "resolve":
                    repo_id, revision, name = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
                    error, sha = hub.resolve(repo_id, revision)
                    if error:
                        return self._error(error)
                    files = hub.repos[repo_id]["commits"][sha]
                    if name not in files:
                        return self._error("EntryNotFound")
                    with open(files[name], "rb") as f:
                        data = f.read()
                    etag = '"' + hashlib.sha256(data).hexdigest() + '"'
                    return self._send(data, {"X-Repo-Commit": sha, "ETag": etag,
                                             "Content-Type": "application/octet-stream"}, body)
                return self._error("RepoNotFound")

            def _send(self, data, headers, body):
                self.send_response(200)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self):
        self._server.shutdown()
        self._server.server_close()
