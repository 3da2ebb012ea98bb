// Calling fetchd from Node: a client set up for fetchd, and its calls.
//
// Needs @grpc/grpc-js and @grpc/proto-loader (package.json here: `npm ci`)
// and fetchd's .proto files, loaded at run time (no generated code):
//
//   const { FetchdClient } = require('./fetchd_client');
//   const fetchd = new FetchdClient('127.0.0.1:50051', { token: TOKEN });
//   const results = await fetchd.batchFetch(urls, { timeoutMs: 60000 });
//   for (const r of results) console.log(r.index, r.http_status, r.error?.code);
//   fetchd.close();
//
// Three things a default client gets wrong for fetchd:
//  * Receive size. grpc's default is 4 MiB per message, and one BatchFetch
//    of 20,000 small JSON bodies is ~6 MB: the server does all the work and
//    the client then fails RESOURCE_EXHAUSTED "Received message larger than
//    max". The client here takes what fetchd may send (--max_response_bytes,
//    256 MiB by default, plus room for each result's metadata). For big
//    batches prefer streamBatchFetch (one message per item) or drop_body.
//  * Retries. The service config retries UNAVAILABLE (fetchd restarting or
//    draining, a connection refused) with backoff. grpc replays a call only
//    until the first response message arrives, so a stream is never
//    replayed half-read. A replayed BatchFetch fetches its URLs again: give
//    POST items that must not repeat to Jobs.Submit with an idempotency key.
//  * Deadlines. grpc has none by default: every call here takes timeoutMs,
//    and fetchd stops the work under a call when it passes.
'use strict';

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

// fetchd's --max_response_bytes default: body bytes one fetch RPC may hold.
const MAX_RESPONSE_BYTES = 256 * 1024 * 1024;
// On top of the bodies, each result carries its URL, headers and timings,
// ~300 bytes: ~6 MB at --max_batch_items (20,000).
const RESULT_OVERHEAD_BYTES = 32 * 1024 * 1024;
const MAX_RECEIVE_BYTES = MAX_RESPONSE_BYTES + RESULT_OVERHEAD_BYTES;

// Retry UNAVAILABLE on the Fetch and Compute services. Not on Jobs: a
// replayed Submit without an idempotency key would be a second job.
const SERVICE_CONFIG = {
  methodConfig: [{
    name: [{ service: 'fetchd.v1.Fetch' }, { service: 'fetchd.v1.Compute' }],
    retryPolicy: {
      maxAttempts: 4,
      initialBackoff: '0.2s',
      maxBackoff: '2s',
      backoffMultiplier: 2,
      retryableStatusCodes: ['UNAVAILABLE'],
    },
  }],
};

// The repository's protos/, or FETCHD_PROTOS.
const DEFAULT_PROTOS =
    process.env.FETCHD_PROTOS || path.join(__dirname, '..', '..', 'protos');

// keepCase: fields keep the proto's names (http_status, resume_token);
// longs as strings: int64 values (body_bytes, ...) lose nothing; enums as
// their names ('EMIT_ITEMS'); defaults: unset fields read as 0 / ''.
function loadProtos(protosDir = DEFAULT_PROTOS) {
  const definition = protoLoader.loadSync(
      ['fetchd/v1/fetch.proto', 'fetchd/v1/compute.proto'], {
        includeDirs: [protosDir],
        keepCase: true,
        longs: String,
        enums: String,
        defaults: true,
        oneofs: true,
      });
  return grpc.loadPackageDefinition(definition).fetchd.v1;
}

function channelOptions({ maxReceiveBytes = MAX_RECEIVE_BYTES, retries = true } = {}) {
  const options = { 'grpc.max_receive_message_length': maxReceiveBytes };
  if (retries) {
    options['grpc.enable_retries'] = 1;
    options['grpc.service_config'] = JSON.stringify(SERVICE_CONFIG);
  } else {
    options['grpc.enable_retries'] = 0;
  }
  return options;
}

function deadline(timeoutMs) {
  if (!(timeoutMs > 0)) throw new Error('timeoutMs: every call needs a deadline');
  return { deadline: Date.now() + timeoutMs };
}

class FetchdClient {
  // target "host:port"; token: sent as "authorization: Bearer TOKEN";
  // credentials: grpc.credentials.createSsl(...) for TLS, else plaintext.
  constructor(target, { token, credentials, protosDir, ...options } = {}) {
    const v1 = loadProtos(protosDir);
    const creds = credentials || grpc.credentials.createInsecure();
    const opts = channelOptions(options);
    this.fetch = new v1.Fetch(target, creds, opts);
    // Its own client on the same channel (and the same options).
    this.compute = new v1.Compute(target, creds,
        { ...opts, channelOverride: this.fetch.getChannel() });
    this.token = token;
  }

  close() {
    this.fetch.close();
  }

  metadata() {
    const md = new grpc.Metadata();
    if (this.token) md.set('authorization', `Bearer ${this.token}`);
    return md;
  }

  static items(urls, itemFields = {}) {
    return urls.map((url) => ({ url, ...itemFields }));
  }

  // Results in request order; an item's failure is its result's `error`
  // (code != 0), not a rejection. One response message: for thousands of
  // URLs with bodies, use streamBatchFetch.
  batchFetch(urls, { timeoutMs, ...requestFields }) {
    const request = { items: FetchdClient.items(urls), ...requestFields };
    return new Promise((resolve, reject) => {
      this.fetch.BatchFetch(request, this.metadata(), deadline(timeoutMs),
          (err, response) => (err ? reject(err) : resolve(response.results)));
    });
  }

  // Yields each FetchResult as its item completes (result.index is its
  // position in urls): count them for progress. Breaking out of the loop
  // cancels the call, and fetchd stops its fetches.
  async * streamBatchFetch(urls, { timeoutMs, ...requestFields }) {
    const request = { items: FetchdClient.items(urls), ...requestFields };
    const call = this.fetch.StreamBatchFetch(request, this.metadata(),
        deadline(timeoutMs));
    try {
      for await (const response of call) yield response.result;
    } finally {
      call.cancel();
    }
  }

  // Yields the Pages of a walk (a FetchPagesRequest object). Each page's
  // resume_token, passed back here, continues after that page.
  async * pages(request, { timeoutMs, resumeToken = '' }) {
    const call = this.fetch.FetchPages(
        { ...request, resume_token: resumeToken || request.resume_token || '' },
        this.metadata(), deadline(timeoutMs));
    try {
      for await (const response of call) yield response.page;
    } finally {
      call.cancel();
    }
  }

  // Σ√i for i < n, computed on fetchd's worker pool.
  sqrtSum(n, { timeoutMs }) {
    return new Promise((resolve, reject) => {
      this.compute.Run({ sqrt_sum: { n: String(n) } }, this.metadata(),
          deadline(timeoutMs),
          (err, response) => (err ? reject(err) : resolve(response.sqrt_sum)));
    });
  }
}

module.exports = {
  FetchdClient, loadProtos, channelOptions, SERVICE_CONFIG,
  MAX_RESPONSE_BYTES, MAX_RECEIVE_BYTES, grpc,
};
