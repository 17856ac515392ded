#!/usr/bin/env python3
"""An ERP web hook for tests (Python's standard library only): answers POSTs on 127.0.0.1 at a
free port, printing {"port": N} when listening, then one JSON line per request received:
{"status": S, "headers": {...}, "body": <the JSON body>}.

Modes (first argument):
  fail-first N   answer 500 to the first N requests, then 200
  reject         answer 400 to every request
  ok             answer 200
  redirect-first N URL
                 answer 302 with Location: URL to the first N requests, then 200
  status-first N S
                 answer status S (any number, 600 say) to the first N requests, then 200
"""
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

mode = sys.argv[1]
fail_first = int(sys.argv[2]) if mode in ("fail-first", "redirect-first", "status-first") else 0
location = sys.argv[3] if mode == "redirect-first" else None
odd_status = int(sys.argv[3]) if mode == "status-first" else None
count = 0
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        global count
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        with lock:
            count += 1
            n = count
        if mode == "reject":
            status = 400
        elif n <= fail_first:
            status = 302 if location else odd_status or 500
        else:
            status = 200
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        print(json.dumps({"status": status, "method": self.command, "path": self.path,
                          "headers": dict(self.headers), "body": parsed}), flush=True)
        answer = b'{"error":"unknown plant"}' if status == 400 else b"{}"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if status == 302:
            self.send_header("Location", location)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    # Any method is recorded, so a test sees a request that should never have come (a redirect
    # followed with GET).
    do_GET = do_POST
    do_PUT = do_POST

    # As an HTTP proxy: a CONNECT is recorded and answered 200, and the requests then sent
    # through the tunnel are served here as if this were the target.
    def do_CONNECT(self):
        print(json.dumps({"status": 200, "method": "CONNECT", "path": self.path,
                          "headers": dict(self.headers), "body": None}), flush=True)
        self.send_response(200, "Connection established")
        self.end_headers()
        self.close_connection = False

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(json.dumps({"port": server.server_address[1]}), flush=True)
threading.Thread(target=lambda: (sys.stdin.read(), server.shutdown()), daemon=True).start()
server.serve_forever()
