"""Calling fetchd from Python: a channel set up for fetchd, and its calls.

Needs Debian's python3-grpcio and stubs generated from protos/ (never
committed; the build puts them in build/python):

    protoc -I protos --python_out=OUT --grpc_python_out=OUT \\
      --plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin \\
      fetchd/v1/fetch.proto fetchd/v1/compute.proto fetchd/v1/jobs.proto

then OUT on sys.path (PYTHONPATH=OUT). Python's grpc_tools is not needed:
Debian's (1.14) bundles protoc 3.5, which cannot read proto3 `optional`.

    with FetchdClient("127.0.0.1:50051", token=TOKEN) as fetchd:
        for r in fetchd.batch_fetch(urls, timeout=60):
            print(r.index, r.http_status, r.error.code)

Three things a default grpc channel gets wrong for fetchd:
  * Receive size. grpc's default is 4 MiB per message, and one BatchFetch
    of 20,000 small JSON bodies is ~6 MB: the server does all the work and
    the client then fails RESOURCE_EXHAUSTED "Received message larger than
    max". The channel here takes what fetchd may send (--max_response_bytes,
    256 MiB by default, plus room for each result's metadata). For big
    batches prefer stream_batch_fetch (one message per item) or drop_body.
  * Retries. The service config retries UNAVAILABLE (fetchd restarting or
    draining, a connection refused) with backoff. grpc replays a call only
    until the first response message arrives, so a stream is never
    replayed half-read. A replayed BatchFetch fetches its URLs again: give
    POST items that must not repeat to Jobs.Submit with an idempotency key.
  * Deadlines. grpc has none by default: every call here takes `timeout`
    (seconds), and fetchd stops the work under a call when it passes.
"""

import json

import grpc

from fetchd.v1 import compute_pb2, compute_pb2_grpc, fetch_pb2, fetch_pb2_grpc

# fetchd's --max_response_bytes default: body bytes one fetch RPC may hold.
MAX_RESPONSE_BYTES = 256 << 20
# On top of the bodies, each result carries its URL, headers and timings,
# ~300 bytes: ~6 MB at --max_batch_items (20,000).
RESULT_OVERHEAD_BYTES = 32 << 20
MAX_RECEIVE_BYTES = MAX_RESPONSE_BYTES + RESULT_OVERHEAD_BYTES

# Retry UNAVAILABLE on the Fetch and Compute services. Not on Jobs: a
# replayed Submit without an idempotency key would be a second job.
SERVICE_CONFIG = {
    "methodConfig": [{
        "name": [{"service": "fetchd.v1.Fetch"},
                 {"service": "fetchd.v1.Compute"}],
        "retryPolicy": {
            "maxAttempts": 4,
            "initialBackoff": "0.2s",
            "maxBackoff": "2s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        },
    }]
}


def channel_options(max_receive_bytes=MAX_RECEIVE_BYTES, retries=True):
    """The channel options above, as a list for grpc.insecure_channel /
    grpc.secure_channel."""
    options = [("grpc.max_receive_message_length", max_receive_bytes)]
    if retries:
        options += [("grpc.enable_retries", 1),
                    ("grpc.service_config", json.dumps(SERVICE_CONFIG))]
    return options


class _BearerToken(grpc.UnaryUnaryClientInterceptor,
                   grpc.UnaryStreamClientInterceptor):
    """Adds "authorization: Bearer TOKEN" to every call. (On a TLS channel,
    grpc.access_token_call_credentials does the same.)"""

    def __init__(self, token):
        self._header = ("authorization", f"Bearer {token}")

    def _with_token(self, details):
        return details._replace(
            metadata=list(details.metadata or []) + [self._header])

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._with_token(details), request)


def connect(target, token=None, credentials=None, **options):
    """A channel to fetchd at `target` ("host:port"): TLS when `credentials`
    (grpc.ssl_channel_credentials(...)) is given, plaintext otherwise."""
    opts = channel_options(**options)
    if credentials is not None:
        channel = grpc.secure_channel(target, credentials, options=opts)
    else:
        channel = grpc.insecure_channel(target, options=opts)
    if token:
        channel = grpc.intercept_channel(channel, _BearerToken(token))
    return channel


def items(urls, **item_fields):
    """FetchItems for plain GETs of `urls` (fields such as process= apply to
    each)."""
    return [fetch_pb2.FetchItem(url=u, **item_fields) for u in urls]


class FetchdClient:
    """The Fetch and Compute calls, each with a deadline (`timeout`, s)."""

    def __init__(self, target, token=None, credentials=None, **options):
        self.channel = connect(target, token, credentials, **options)
        self.fetch = fetch_pb2_grpc.FetchStub(self.channel)
        self.compute = compute_pb2_grpc.ComputeStub(self.channel)

    def close(self):
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def batch_fetch(self, urls, timeout, **request_fields):
        """Results in request order; an item's failure is its result's
        `error` (code != 0), not an exception. One response message: for
        thousands of URLs with bodies, use stream_batch_fetch."""
        request = fetch_pb2.BatchFetchRequest(items=items(urls),
                                              **request_fields)
        return list(self.fetch.BatchFetch(request, timeout=timeout).results)

    def stream_batch_fetch(self, urls, timeout, **request_fields):
        """Yields each FetchResult as its item completes (result.index is its
        position in `urls`): count them for progress."""
        request = fetch_pb2.StreamBatchFetchRequest(items=items(urls),
                                                    **request_fields)
        call = self.fetch.StreamBatchFetch(request, timeout=timeout)
        try:
            for response in call:
                yield response.result
        finally:
            call.cancel()  # the caller stopped reading: stop the fetches

    def pages(self, request, timeout, resume_token=""):
        """Yields the Pages of a walk (a FetchPagesRequest). Each page's
        resume_token, passed back here, continues after that page, e.g.
        after a lost connection or in a later job."""
        if resume_token:
            copy = fetch_pb2.FetchPagesRequest()
            copy.CopyFrom(request)
            copy.resume_token = resume_token
            request = copy
        call = self.fetch.FetchPages(request, timeout=timeout)
        try:
            for response in call:
                yield response.page
        finally:
            call.cancel()  # the caller stopped reading: stop the walk

    def sqrt_sum(self, n, timeout):
        """Σ√i for i < n, computed on fetchd's worker pool."""
        request = compute_pb2.RunRequest(sqrt_sum=compute_pb2.SqrtSum(n=n))
        return self.compute.Run(request, timeout=timeout).sqrt_sum
