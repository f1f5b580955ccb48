"""The compose check's target: answers every call with 200, after 2 s under /slow/, and
keeps each call (job id, attempt, path, start and end times) for GET /calls."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CALLS = []
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/calls":
            with LOCK:
                body = json.dumps(CALLS)
            self.reply(200, body)
        else:
            self.reply(404, "{}")

    def do_POST(self):
        started = time.time()
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if self.path.startswith("/slow/"):
            time.sleep(2)
        call = {
            "job": self.headers.get("X-Courier-Job-Id"),
            "attempt": self.headers.get("X-Courier-Attempt"),
            "path": self.path,
            "start": started,
        }
        try:
            self.reply(200, '{"ok":true}')
            call["answered"] = True
        except OSError:
            # The worker went away mid-call (killed): its lease runs out and the job
            # runs again.
            call["answered"] = False
        call["end"] = time.time()
        with LOCK:
            CALLS.append(call)


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer.request_queue_size = 1024
ThreadingHTTPServer(("0.0.0.0", 8000), Handler).serve_forever()
