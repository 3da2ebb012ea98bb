// fetchd_client.js against a real fetchd and a real HTTP origin, both on
// 127.0.0.1 ephemeral ports (nothing else is contacted).
//
//   node fetchd_client.test.js --fetchd=build/bin/fetchd [--protos=protos]
//
// Every call has a deadline, every wait a timeout; fetchd and the origin are
// stopped at the end. Run by ctest (tests/CMakeLists.txt: NodeClient).
'use strict';

const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');
const { test, before, after } = require('node:test');

const { FetchdClient, loadProtos, grpc } = require('./fetchd_client');

const args = Object.fromEntries(process.argv.slice(2)
    .filter((a) => a.startsWith('--') && a.includes('='))
    .map((a) => a.slice(2).split(/=(.*)/s).slice(0, 2)));
if (!args.fetchd) throw new Error('usage: --fetchd=PATH [--protos=DIR]');
const protosDir = args.protos;

const TOKEN = `node-client-${crypto.randomBytes(16).toString('hex')}`;
const BIG_BATCH = 20000;  // fetchd's --max_batch_items default
const PAGES = 6;          // the cursor API's pages, 3 items each

// ~200 bytes, like the 20,000 "small JSON URLs" (6.4 MB in one
// BatchFetchResponse).
function smallJson(n) {
  return {
    id: n, name: `item-${n}`, tags: ['fetchd', 'node', 'test'],
    description: 'a small JSON document from the test origin, ' +
        'one of twenty thousand in the big batch',
    price: n * 0.25, in_stock: n % 3 !== 0,
  };
}

// /gate answers once openGate() is called (at most 20 s).
let gate = null;
function newGate() {
  let open;
  const opened = new Promise((resolve) => { open = () => resolve(true); });
  gate = { open, opened, openedByClient: null };
  return gate;
}

// /j/N small JSON; /missing 404; /bytes?n=N N bytes; /gate JSON once the
// gate is open; /cursor?c=K a cursor-paged API of PAGES pages.
function originHandler(req, res) {
  const url = new URL(req.url, 'http://origin');
  let status = 200;
  let body = '';
  const send = () => {
    const buf = Buffer.isBuffer(body) ? body : Buffer.from(body);
    res.writeHead(status, { 'Content-Type': 'application/json',
      'Content-Length': buf.length });
    res.end(buf);
  };
  if (url.pathname.startsWith('/j/')) {
    body = JSON.stringify(smallJson(Number(url.pathname.slice(3))));
  } else if (url.pathname === '/bytes') {
    body = Buffer.alloc(Number(url.searchParams.get('n')), 'x');
  } else if (url.pathname === '/gate') {
    body = '{"gate":true}';
    const g = gate;
    let timer;
    Promise.race([g.opened, new Promise((resolve) => {
      timer = setTimeout(() => resolve(false), 20000);
    })]).then((opened) => {
      clearTimeout(timer);
      g.openedByClient = opened;
      send();
    });
    return;
  } else if (url.pathname === '/cursor') {
    const k = Number(url.searchParams.get('c') || '0');
    const page = { items: [0, 1, 2].map((i) => ({ page: k, i })) };
    if (k + 1 < PAGES) page.next = String(k + 1);
    body = JSON.stringify(page);
  } else {
    status = 404;
    body = 'not found';
  }
  send();
}

function listen(server) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server.address().port));
  });
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([promise, new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer in ${ms} ms`)), ms);
  })]).finally(() => clearTimeout(timer));
}

// fetchd as a child process on 127.0.0.1:0; its stderr kept in `log`.
class Fetchd {
  static async start(binary, flags) {
    const f = new Fetchd();
    f.log = [];
    f.proc = spawn(binary, ['--listen=127.0.0.1:0', '--metrics_listen=127.0.0.1:0',
      '--job_store=none', '--drain_delay=0', ...flags],
    { stdio: ['ignore', 'ignore', 'pipe'] });
    f.exited = new Promise((resolve) => f.proc.once('exit', (code, signal) =>
      resolve(code ?? signal)));
    const serving = new Promise((resolve, reject) => {
      readline.createInterface({ input: f.proc.stderr }).on('line', (line) => {
        f.log.push(line);
        const m = /"event":"serving".*"port":(\d+)/.exec(line);
        if (m) resolve(Number(m[1]));
      });
      f.exited.then((code) => reject(new Error(`fetchd exited ${code}`)));
    });
    try {
      f.port = await withTimeout(serving, 30000, 'fetchd "serving"');
    } catch (err) {
      await f.stop();
      throw new Error(`${err.message}\n${f.log.join('\n')}`);
    }
    return f;
  }

  async stop() {
    if (this.proc.exitCode === null && this.proc.signalCode === null) {
      this.proc.kill('SIGTERM');
      try {
        return await withTimeout(this.exited, 30000, 'fetchd exit');
      } catch {
        this.proc.kill('SIGKILL');
      }
    }
    return withTimeout(this.exited, 10000, 'fetchd exit after SIGKILL');
  }
}

let origin;
let base;
let refusedUrl;
let tmp;
let fetchd;
let target;
let client;
const url = (p) => base + p;
const codeOf = (name) => grpc.status[name];

before(async () => {
  origin = http.createServer({ keepAlive: true }, originHandler);
  base = `http://127.0.0.1:${await listen(origin)}`;
  // A port that was just free and is closed again: a connect is refused.
  const probe = net.createServer();
  const port = await listen(probe);
  await new Promise((resolve) => probe.close(resolve));
  refusedUrl = `http://127.0.0.1:${port}/x`;
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fetchd-node-'));
  const tokens = path.join(tmp, 'tokens');
  fs.writeFileSync(tokens, `node-test ${TOKEN}\n`);
  fetchd = await Fetchd.start(args.fetchd,
      ['--allow_cidrs=127.0.0.0/8', `--auth_tokens_file=${tokens}`]);
  target = `127.0.0.1:${fetchd.port}`;
  client = new FetchdClient(target, { token: TOKEN, protosDir });
});

after(async () => {
  client?.close();
  const code = fetchd ? await fetchd.stop() : 0;
  origin?.closeAllConnections();
  origin?.close();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  assert.equal(code, 0, `fetchd exited ${code}:\n${fetchd?.log.join('\n')}`);
});

test('BatchFetch has per-item errors', { timeout: 60000 }, async () => {
  const results = await client.batchFetch(
      [url('/j/7'), url('/missing'), refusedUrl], { timeoutMs: 30000 });
  assert.deepEqual(results.map((r) => r.index), [0, 1, 2]);
  const [ok, missing, down] = results;
  assert.equal(ok.http_status, 200);
  assert.equal(ok.error, null);
  assert.deepEqual(JSON.parse(ok.body), smallJson(7));
  assert.equal(missing.http_status, 404);
  assert.equal(missing.error.code, codeOf('NOT_FOUND'));
  assert.equal(down.http_status, 0);
  assert.equal(down.error.code, codeOf('UNAVAILABLE'));
  assert.ok(down.error.message);
});

test('StreamBatchFetch reports progress', { timeout: 60000 }, async () => {
  // Item 0's answer waits for the client to have seen a result: only a
  // stream delivers results while an item is still in flight.
  const g = newGate();
  const urls = [url('/gate')];
  for (let i = 1; i < 50; i++) urls.push(url(`/j/${i}`));
  const order = [];
  for await (const result of client.streamBatchFetch(urls, { timeoutMs: 60000 })) {
    order.push(result.index);  // progress: order.length of urls.length
    assert.equal(result.error, null);
    g.open();
  }
  assert.equal(g.openedByClient, true);
  assert.notEqual(order[0], 0);
  assert.deepEqual([...order].sort((a, b) => a - b), urls.map((_, i) => i));
});

test('FetchPages resumes from a token', { timeout: 60000 }, async () => {
  const request = {
    first: { url: url('/cursor') },
    cursor: { pointer: '/next', param: 'c' },
    items_pointer: '/items', emit: 'EMIT_ITEMS', max_pages: 2,
  };
  const first = [];
  for await (const page of client.pages(request, { timeoutMs: 30000 })) first.push(page);
  assert.deepEqual(first.map((p) => Number(p.index)), [0, 1]);
  // A new call from page 1's token continues with page 2, to the end.
  const rest = [];
  for await (const page of client.pages({ ...request, max_pages: 0 },
      { timeoutMs: 30000, resumeToken: first.at(-1).resume_token })) {
    rest.push(page);
  }
  assert.deepEqual(rest.map((p) => Number(p.index)),
      Array.from({ length: PAGES - 2 }, (_, i) => i + 2));
  const seen = [...first, ...rest].flatMap((p) => p.items.map((i) => JSON.parse(i)));
  const want = [];
  for (let k = 0; k < PAGES; k++) for (let i = 0; i < 3; i++) want.push({ page: k, i });
  assert.deepEqual(seen, want);
});

test('Compute with a deadline', { timeout: 60000 }, async () => {
  const n = 100000;
  let want = 0;
  for (let i = 0; i < n; i++) want += Math.sqrt(i);
  const got = await client.sqrtSum(n, { timeoutMs: 10000 });
  assert.ok(Math.abs(got - want) <= want * 1e-12, `${got} vs ${want}`);
  // 10^10 square roots take seconds; the deadline ends it at 0.2 s.
  const start = Date.now();
  await assert.rejects(client.sqrtSum(1e10, { timeoutMs: 200 }),
      (err) => err.code === codeOf('DEADLINE_EXCEEDED'));
  assert.ok(Date.now() - start < 5000);
});

test('a bearer token is needed', { timeout: 60000 }, async () => {
  for (const token of [undefined, `wrong-${TOKEN}`]) {
    const anon = new FetchdClient(target, { token, protosDir });
    try {
      await assert.rejects(anon.sqrtSum(10, { timeoutMs: 10000 }),
          (err) => err.code === codeOf('UNAUTHENTICATED'));
    } finally {
      anon.close();
    }
  }
});

test('the service config retries UNAVAILABLE', { timeout: 60000 }, async () => {
  // fetchd cannot be made to answer UNAVAILABLE on cue, so a stand-in
  // Compute on loopback does: twice, then OK. The channel's retry policy,
  // not the test, makes the second and third attempts.
  const attempts = [];
  const server = new grpc.Server();
  server.addService(loadProtos(protosDir).Compute.service, {
    Run(call, callback) {
      attempts.push(Number(call.request.sqrt_sum.n));
      if (attempts.length < 3) {
        callback({ code: grpc.status.UNAVAILABLE, details: 'draining' });
      } else {
        callback(null, { sqrt_sum: 42 });
      }
    },
  });
  const port = await new Promise((resolve, reject) => server.bindAsync(
      '127.0.0.1:0', grpc.ServerCredentials.createInsecure(),
      (err, p) => (err ? reject(err) : resolve(p))));
  try {
    const c = new FetchdClient(`127.0.0.1:${port}`, { protosDir });
    try {
      assert.equal(await c.sqrtSum(9, { timeoutMs: 10000 }), 42);
    } finally {
      c.close();
    }
    assert.deepEqual(attempts, [9, 9, 9]);
    attempts.length = 0;
    const once = new FetchdClient(`127.0.0.1:${port}`, { protosDir, retries: false });
    try {
      await assert.rejects(once.sqrtSum(9, { timeoutMs: 10000 }),
          (err) => err.code === codeOf('UNAVAILABLE'));
    } finally {
      once.close();
    }
    assert.deepEqual(attempts, [9]);
  } finally {
    server.forceShutdown();
  }
});

const bigUrls = () => Array.from({ length: BIG_BATCH }, (_, i) => url(`/j/${i}`));

test('20,000 items, unary, with the raised limit', { timeout: 180000 }, async () => {
  const start = Date.now();
  const results = await client.batchFetch(bigUrls(), { timeoutMs: 120000 });
  assert.equal(results.length, BIG_BATCH);
  let bytes = 0;
  results.forEach((r, i) => {
    assert.equal(r.index, i);
    assert.equal(r.http_status, 200, r.error?.message);
    assert.equal(JSON.parse(r.body).id, i);
    bytes += r.body.length + r.url.length + r.final_url.length;
  });
  // The point of the raised limit: the bodies and URLs alone are past
  // grpc's default 4 MiB in this one message.
  assert.ok(bytes > 4 * 1024 * 1024, `${bytes} bytes`);
  console.error(`  unary BatchFetch: ${BIG_BATCH} items, >${(bytes / 1e6).toFixed(1)} MB ` +
      `in one message, ${((Date.now() - start) / 1000).toFixed(1)} s`);
});

test('20,000 items, streamed', { timeout: 180000 }, async () => {
  const start = Date.now();
  const seen = new Uint8Array(BIG_BATCH);
  let done = 0;
  for await (const r of client.streamBatchFetch(bigUrls(), { timeoutMs: 120000 })) {
    assert.equal(r.http_status, 200, r.error?.message);
    assert.equal(JSON.parse(r.body).id, r.index);
    seen[r.index] += 1;
    done += 1;
  }
  assert.equal(done, BIG_BATCH);
  assert.ok(seen.every((v) => v === 1));
  console.error(`  StreamBatchFetch: ${BIG_BATCH} items, ` +
      `${((Date.now() - start) / 1000).toFixed(1)} s`);
});

test('the default 4 MiB limit fails RESOURCE_EXHAUSTED', { timeout: 60000 }, async () => {
  // What a default client does with a response past 4 MiB: fetchd answers,
  // the client refuses it. 5 x 1 MiB is the cheap way there.
  const urls = Array(5).fill(url(`/bytes?n=${1 << 20}`));
  const small = new FetchdClient(target,
      { token: TOKEN, protosDir, maxReceiveBytes: 4 * 1024 * 1024 });
  try {
    await assert.rejects(small.batchFetch(urls, { timeoutMs: 30000 }),
        (err) => err.code === codeOf('RESOURCE_EXHAUSTED') &&
            /larger than max/.test(err.details));
    // The same items streamed: each message is 1 MiB, all arrive.
    const sizes = [];
    for await (const r of small.streamBatchFetch(urls, { timeoutMs: 30000 })) {
      sizes.push(Number(r.body_bytes));
    }
    assert.deepEqual(sizes, Array(5).fill(1 << 20));
    // Or without the bodies: sizes (and processed output) only.
    const dropped = await small.batchFetch(urls, { timeoutMs: 30000, drop_body: true });
    assert.deepEqual(dropped.map((r) => [r.body.length, Number(r.body_bytes)]),
        Array(5).fill([0, 1 << 20]));
  } finally {
    small.close();
  }
  const results = await client.batchFetch(urls, { timeoutMs: 30000 });
  assert.deepEqual(results.map((r) => r.body.length), Array(5).fill(1 << 20));
});
