"""fetchd_client.py against a real fetchd and a real HTTP origin, both on
127.0.0.1 ephemeral ports (nothing else is contacted).

    python3 fetchd_client_test.py --fetchd=build/bin/fetchd --stubs=build/python

Every call has a deadline, every wait a timeout; fetchd and the origin are
stopped at the end. Run by ctest (tests/CMakeLists.txt: PythonClient).
"""

import argparse
from concurrent import futures
import http.server
import json
import math
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse

ARGS = None
TOKEN = "py-client-" + os.urandom(16).hex()
BIG_BATCH = 20000  # fetchd's --max_batch_items default
PAGES = 6          # the cursor API's pages, 3 items each


def small_json(n):
    """~200 bytes, like the issue's 20,000 "small JSON URLs" (6.4 MB in one
    BatchFetchResponse)."""
    return {"id": n, "name": f"item-{n}", "tags": ["fetchd", "python", "test"],
            "description": "a small JSON document from the test origin, "
                           "one of twenty thousand in the big batch",
            "price": n * 0.25, "in_stock": n % 3 != 0}


class Origin(http.server.BaseHTTPRequestHandler):
    """/j/N small JSON; /missing 404; /bytes?n=N N bytes; /gate JSON once
    `gate` is set (at most 20 s); /cursor?c=K a cursor-paged API of PAGES
    pages."""
    protocol_version = "HTTP/1.1"  # keep-alive: fetchd reuses connections
    gate = threading.Event()
    gate_opened_by_client = None

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        status, body = 200, b""
        if url.path.startswith("/j/"):
            n = int(url.path[3:])
            body = json.dumps(small_json(n)).encode()
        elif url.path == "/bytes":
            body = b"x" * int(query["n"])
        elif url.path == "/gate":
            Origin.gate_opened_by_client = Origin.gate.wait(timeout=20)
            body = b'{"gate":true}'
        elif url.path == "/cursor":
            k = int(query.get("c", "0"))
            page = {"items": [{"page": k, "i": i} for i in range(3)]}
            if k + 1 < PAGES:
                page["next"] = str(k + 1)
            body = json.dumps(page).encode()
        else:
            status, body = 404, b"not found"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class OriginServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    # fetchd opens up to 64 connections at once (--default_concurrency);
    # the default backlog of 5 drops connects and stalls them for seconds.
    request_queue_size = 256

    def handle_error(self, request, client_address):
        # fetchd closing a connection of a cancelled call is not an error.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class Fetchd:
    """fetchd as a child process on 127.0.0.1:0, its stderr drained by a
    thread (so its log never blocks it) into `lines`."""

    def __init__(self, binary, flags):
        self.proc = subprocess.Popen(
            [binary, "--listen=127.0.0.1:0", "--metrics_listen=127.0.0.1:0",
             "--job_store=none", "--drain_delay=0", *flags],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True)
        self.lines = queue.Queue()
        self.log = []
        threading.Thread(target=self._drain, daemon=True).start()
        self.port = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not self.port:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            m = re.search(r'"event":"serving".*"port":(\d+)', line)
            if m:
                self.port = int(m.group(1))
        if not self.port:
            self.stop()
            raise RuntimeError("fetchd did not serve within 30 s:\n" +
                               "".join(self.log))

    def _drain(self):
        for line in self.proc.stderr:
            self.log.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode


class FetchdClientTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.origin = OriginServer(("127.0.0.1", 0), Origin)
        threading.Thread(target=cls.origin.serve_forever, daemon=True).start()
        cls.base = f"http://127.0.0.1:{cls.origin.server_address[1]}"
        # Bound, never listening: a connect there is refused, and no other
        # process can take the port while the test runs.
        cls.refused = socket.socket()
        cls.refused.bind(("127.0.0.1", 0))
        tokens = os.path.join(cls.tmp.name, "tokens")
        with open(tokens, "w") as f:
            f.write(f"python-test {TOKEN}\n")
        cls.fetchd = Fetchd(ARGS.fetchd, [
            "--allow_cidrs=127.0.0.0/8", f"--auth_tokens_file={tokens}"])
        cls.target = f"127.0.0.1:{cls.fetchd.port}"
        cls.client = fetchd_client.FetchdClient(cls.target, token=TOKEN)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        code = cls.fetchd.stop()
        cls.origin.shutdown()
        cls.origin.server_close()
        cls.refused.close()
        cls.tmp.cleanup()
        assert code == 0, f"fetchd exited {code}:\n" + "".join(cls.fetchd.log)

    def url(self, path):
        return self.base + path

    def test_batch_fetch_has_per_item_errors(self):
        refused = f"http://127.0.0.1:{self.refused.getsockname()[1]}/x"
        urls = [self.url("/j/7"), self.url("/missing"), refused]
        results = self.client.batch_fetch(urls, timeout=30)
        self.assertEqual([r.index for r in results], [0, 1, 2])
        ok, missing, down = results
        self.assertEqual((ok.http_status, ok.error.code), (200, 0))
        self.assertEqual(json.loads(ok.body), small_json(7))
        self.assertEqual(missing.http_status, 404)
        self.assertEqual(missing.error.code, grpc.StatusCode.NOT_FOUND.value[0])
        self.assertEqual(down.http_status, 0)
        self.assertEqual(down.error.code, grpc.StatusCode.UNAVAILABLE.value[0])
        self.assertTrue(down.error.message)

    def test_stream_batch_fetch_reports_progress(self):
        # Item 0's answer waits for the client to have seen a result: only a
        # stream delivers results while an item is still in flight.
        Origin.gate = threading.Event()
        Origin.gate_opened_by_client = None
        urls = [self.url("/gate")] + [self.url(f"/j/{i}") for i in range(1, 50)]
        order = []
        for done, result in enumerate(
                self.client.stream_batch_fetch(urls, timeout=60), start=1):
            order.append(result.index)
            self.assertEqual(len(order), done)  # progress: done of len(urls)
            self.assertEqual(result.error.code, 0, result.error.message)
            Origin.gate.set()
        self.assertTrue(Origin.gate_opened_by_client)
        self.assertNotEqual(order[0], 0)
        self.assertEqual(sorted(order), list(range(len(urls))))

    def test_fetch_pages_resumes_from_a_token(self):
        request = fetch_pb2.FetchPagesRequest(
            first=fetch_pb2.FetchItem(url=self.url("/cursor")),
            cursor=fetch_pb2.Cursor(pointer="/next", param="c"),
            items_pointer="/items", emit=fetch_pb2.EMIT_ITEMS, max_pages=2)
        first = list(self.client.pages(request, timeout=30))
        self.assertEqual([p.index for p in first], [0, 1])
        # A new call from page 1's token continues with page 2, to the end.
        request.max_pages = 0
        rest = list(self.client.pages(request, timeout=30,
                                      resume_token=first[-1].resume_token))
        self.assertEqual([p.index for p in rest], list(range(2, PAGES)))
        seen = [json.loads(item) for p in first + rest for item in p.items]
        self.assertEqual(seen, [{"page": k, "i": i}
                                for k in range(PAGES) for i in range(3)])

    def test_compute_with_a_deadline(self):
        n = 100000
        got = self.client.sqrt_sum(n, timeout=10)
        want = math.fsum(math.sqrt(i) for i in range(n))
        self.assertAlmostEqual(got, want, delta=want * 1e-12)
        # 10^10 square roots take seconds; the deadline ends it at 0.2 s.
        start = time.monotonic()
        with self.assertRaises(grpc.RpcError) as raised:
            self.client.sqrt_sum(10_000_000_000, timeout=0.2)
        self.assertEqual(raised.exception.code(),
                         grpc.StatusCode.DEADLINE_EXCEEDED)
        self.assertLess(time.monotonic() - start, 5)

    def test_a_bearer_token_is_needed(self):
        for token in (None, "wrong-" + TOKEN):
            with fetchd_client.FetchdClient(self.target, token=token) as anon:
                with self.assertRaises(grpc.RpcError) as raised:
                    anon.sqrt_sum(10, timeout=10)
                self.assertEqual(raised.exception.code(),
                                 grpc.StatusCode.UNAUTHENTICATED, token)

    def test_the_service_config_retries_unavailable(self):
        # fetchd cannot be made to answer UNAVAILABLE on cue, so a stand-in
        # Compute on loopback does: twice, then OK. The channel's retry
        # policy, not the test, makes the second and third attempts.
        attempts = []

        def run(request, context):
            attempts.append(request.sqrt_sum.n)
            if len(attempts) < 3:
                context.abort(grpc.StatusCode.UNAVAILABLE, "draining")
            return compute_pb2.RunResponse(sqrt_sum=42.0)

        handler = grpc.method_handlers_generic_handler("fetchd.v1.Compute", {
            "Run": grpc.unary_unary_rpc_method_handler(
                run, request_deserializer=compute_pb2.RunRequest.FromString,
                response_serializer=compute_pb2.RunResponse.SerializeToString)})
        with futures.ThreadPoolExecutor(max_workers=2) as pool:
            server = grpc.server(pool, handlers=[handler])
            port = server.add_insecure_port("127.0.0.1:0")
            server.start()
            try:
                with fetchd_client.FetchdClient(f"127.0.0.1:{port}") as c:
                    self.assertEqual(c.sqrt_sum(9, timeout=10), 42.0)
                self.assertEqual(attempts, [9, 9, 9])
                attempts.clear()
                with fetchd_client.FetchdClient(f"127.0.0.1:{port}",
                                                retries=False) as c:
                    with self.assertRaises(grpc.RpcError) as raised:
                        c.sqrt_sum(9, timeout=10)
                self.assertEqual(raised.exception.code(),
                                 grpc.StatusCode.UNAVAILABLE)
                self.assertEqual(attempts, [9])
            finally:
                server.stop(grace=None).wait(timeout=10)

    def test_20000_items_unary_with_the_raised_limit(self):
        urls = [self.url(f"/j/{i}") for i in range(BIG_BATCH)]
        start = time.monotonic()
        results = self.client.batch_fetch(urls, timeout=120)
        elapsed = time.monotonic() - start
        self.assertEqual(len(results), BIG_BATCH)
        bad = [r for r in results if r.error.code or r.http_status != 200]
        self.assertEqual(bad[:3], [])
        self.assertEqual([json.loads(r.body)["id"] for r in results],
                         list(range(BIG_BATCH)))
        size = sum(len(r.SerializeToString()) for r in results)
        # The point of the raised limit: this one message is past grpc's
        # default 4 MiB.
        self.assertGreater(size, 4 << 20)
        print(f"\n  unary BatchFetch: {BIG_BATCH} items, ~{size / 1e6:.1f} MB "
              f"in one message, {elapsed:.1f} s", file=sys.stderr)

    def test_20000_items_streamed(self):
        urls = [self.url(f"/j/{i}") for i in range(BIG_BATCH)]
        seen = bytearray(BIG_BATCH)
        done = 0
        start = time.monotonic()
        for result in self.client.stream_batch_fetch(urls, timeout=120):
            self.assertEqual(result.http_status, 200)
            self.assertEqual(json.loads(result.body)["id"], result.index)
            seen[result.index] += 1
            done += 1
        self.assertEqual(done, BIG_BATCH)
        self.assertEqual(set(seen), {1})
        print(f"\n  StreamBatchFetch: {BIG_BATCH} items, "
              f"{time.monotonic() - start:.1f} s", file=sys.stderr)

    def test_the_default_4_mib_limit_fails_resource_exhausted(self):
        # What a default channel does with a response past 4 MiB: fetchd
        # answers, the client refuses it. 5 x 1 MiB is the cheap way there.
        urls = [self.url(f"/bytes?n={1 << 20}")] * 5
        with fetchd_client.FetchdClient(
                self.target, token=TOKEN,
                max_receive_bytes=4 << 20) as default_limit:
            with self.assertRaises(grpc.RpcError) as raised:
                default_limit.batch_fetch(urls, timeout=30)
            self.assertEqual(raised.exception.code(),
                             grpc.StatusCode.RESOURCE_EXHAUSTED)
            self.assertIn("larger than max", raised.exception.details())
            # The same items streamed: each message is 1 MiB, all arrive.
            sizes = [r.body_bytes for r in
                     default_limit.stream_batch_fetch(urls, timeout=30)]
            self.assertEqual(sizes, [1 << 20] * 5)
            # Or without the bodies: sizes (and processed output) only.
            dropped = default_limit.batch_fetch(urls, timeout=30,
                                                drop_body=True)
            self.assertEqual([(len(r.body), r.body_bytes) for r in dropped],
                             [(0, 1 << 20)] * 5)
        results = self.client.batch_fetch(urls, timeout=30)
        self.assertEqual([len(r.body) for r in results], [1 << 20] * 5)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--fetchd", required=True, help="the fetchd binary")
    parser.add_argument("--stubs", required=True,
                        help="dir of the generated fetchd/v1/*_pb2*.py")
    ARGS, rest = parser.parse_known_args()
    sys.dont_write_bytecode = True  # no __pycache__ in the source tree
    sys.path[:0] = [ARGS.stubs, os.path.dirname(os.path.abspath(__file__))]
    import grpc  # noqa: E402
    import fetchd_client  # noqa: E402
    from fetchd.v1 import compute_pb2, fetch_pb2  # noqa: E402
    unittest.main(argv=[sys.argv[0], *rest], verbosity=2)
