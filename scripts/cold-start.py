#!/usr/bin/env python3
"""Cold start of Lambda bootstraps: time from exec to ready, as the Lambda service sees it.

    scripts/cold-start.py [--runs N] BOOTSTRAP...

Each run execs BOOTSTRAP with AWS_LAMBDA_RUNTIME_API pointing at a tiny runtime API
served here, and measures the time until its first `GET .../runtime/invocation/next`:
the function has then done its init (configuration, AWS SDK, KMS, database) and asks
for work. The process is then killed; a bootstrap that exits first, or reports an init
error, fails the run. The environment (DATABASE_URL, KMS_KEY_ID, AWS_ENDPOINT_URL, ...)
is this process's: `source .stack/env` for the local stack. Prints the median and the
range per bootstrap.
"""

import argparse
import http.server
import os
import statistics
import subprocess
import sys
import threading
import time


class RuntimeApi(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.ready = threading.Event()
        self.ready_at = None
        self.init_error = None


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.endswith("/runtime/invocation/next") and not self.server.ready.is_set():
            self.server.ready_at = time.perf_counter()
            self.server.ready.set()
        # Never answer: the run ends here, the process is killed.
        time.sleep(30)

    def do_POST(self):
        if self.path.endswith("/runtime/init/error"):
            length = int(self.headers.get("Content-Length", 0))
            self.server.init_error = self.rfile.read(length).decode(errors="replace")
            self.server.ready.set()
        self.send_response(202)
        self.end_headers()

    def log_message(self, *args):
        pass


def one_run(bootstrap, name):
    server = RuntimeApi()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = dict(os.environ)
    env.update(
        AWS_LAMBDA_RUNTIME_API="127.0.0.1:%d" % server.server_address[1],
        AWS_LAMBDA_FUNCTION_NAME=name,
        AWS_LAMBDA_FUNCTION_VERSION="$LATEST",
        AWS_LAMBDA_FUNCTION_MEMORY_SIZE="256",
        AWS_LAMBDA_LOG_GROUP_NAME="/aws/lambda/" + name,
        AWS_LAMBDA_LOG_STREAM_NAME="cold-start",
    )
    start = time.perf_counter()
    proc = subprocess.Popen([bootstrap], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while not server.ready.wait(0.005):
        if proc.poll() is not None:
            break
        if time.perf_counter() - start > 30:
            break
    proc.kill()
    _, stderr = proc.communicate()
    server.shutdown()
    server.server_close()
    if server.ready_at is None or server.init_error is not None:
        detail = server.init_error or stderr.decode(errors="replace")[-2000:]
        sys.exit(f"{bootstrap}: not ready: {detail}")
    return (server.ready_at - start) * 1000


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("bootstraps", nargs="+")
    args = parser.parse_args()
    for bootstrap in args.bootstraps:
        # target/lambda/<name>/bootstrap and .aws-sam/build/<Function>/bootstrap
        name = os.path.basename(os.path.dirname(os.path.abspath(bootstrap)))
        one_run(bootstrap, name)  # warm the page cache: every run then reads the file from memory
        times = [one_run(bootstrap, name) for _ in range(args.runs)]
        print(
            f"{bootstrap}: cold start {statistics.median(times):.1f} ms median "
            f"(min {min(times):.1f}, max {max(times):.1f}; {args.runs} runs)"
        )


if __name__ == "__main__":
    main()
