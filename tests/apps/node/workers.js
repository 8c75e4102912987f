'use strict';
// A worker_threads app for the receiver's end-to-end tests: for each of CTXDOCTOR_ROUNDS rounds
// the main thread opens a "dispatch" span and hands a task to every worker; each worker runs its
// own SDK (as the real fixture apps do), so each opens its own exporter connection, and makes
// spans without the dispatcher's context (naive hand-off: each task's first span is an orphan
// root). Every span id created is appended to
// CTXDOCTOR_IDS ("<trace> <span>" per line) so the test can check the dump lost and duplicated
// nothing. The exporter comes from OTEL_EXPORTER_OTLP_PROTOCOL and the other standard env vars,
// exactly as a user's app would be pointed at `ctxdoctor listen`.
const path = require('path');
const fs = require('fs');
const { Worker, isMainThread, workerData, parentPort, threadId } = require('worker_threads');

const NODE_MODULES =
  process.env.CTXDOCTOR_NODE_MODULES || path.resolve(__dirname, '../../../fixtures/apps/node/node_modules');
const load = (name) => require(path.join(NODE_MODULES, name));
const api = load('@opentelemetry/api');
const { BasicTracerProvider, BatchSpanProcessor } = load('@opentelemetry/sdk-trace-base');
const { resourceFromAttributes } = load('@opentelemetry/resources');

function makeExporter() {
  const protocol = process.env.OTEL_EXPORTER_OTLP_PROTOCOL || 'http/protobuf';
  if (protocol === 'grpc') return new (load('@opentelemetry/exporter-trace-otlp-grpc').OTLPTraceExporter)();
  if (protocol === 'http/json') return new (load('@opentelemetry/exporter-trace-otlp-http').OTLPTraceExporter)();
  return new (load('@opentelemetry/exporter-trace-otlp-proto').OTLPTraceExporter)();
}

function makeProvider() {
  return new BasicTracerProvider({
    resource: resourceFromAttributes({
      'service.name': process.env.CTXDOCTOR_SERVICE || 'receiver-test-node',
      'process.pid': process.pid,
      'thread.id': threadId,
      'thread.type': isMainThread ? 'main' : 'worker',
    }),
    spanProcessors: [new BatchSpanProcessor(makeExporter(), { maxExportBatchSize: 256, scheduledDelayMillis: 100 })],
  });
}

const ids = [];
function record(span) {
  const sc = span.spanContext();
  ids.push(`${sc.traceId} ${sc.spanId}\n`);
}
function flushIds() {
  if (ids.length) fs.appendFileSync(process.env.CTXDOCTOR_IDS, ids.join(''));
  ids.length = 0;
}

function worker() {
  const provider = makeProvider();
  const tracer = provider.getTracer('worker');
  parentPort.on('message', async (msg) => {
    if (msg === 'exit') {
      await provider.shutdown();
      flushIds();
      parentPort.postMessage('flushed');
      parentPort.close();
      return;
    }
    // Naive hand-off: no context crosses the boundary, so this span is a new root.
    const root = tracer.startSpan('work', { kind: api.SpanKind.INTERNAL, attributes: { round: msg.round } });
    record(root);
    const ctx = api.trace.setSpan(api.ROOT_CONTEXT, root);
    for (let i = 1; i < msg.spans; i++) {
      const child = tracer.startSpan('step', { attributes: { 'step.index': i, 'step.ok': true } }, ctx);
      child.addEvent('tick', { n: i });
      child.end();
      record(child);
    }
    await new Promise((r) => setTimeout(r, 2));
    root.end();
    parentPort.postMessage('done');
  });
}

function ask(w, msg, answer) {
  return new Promise((resolve, reject) => {
    const onMessage = (m) => {
      if (m === answer) {
        w.off('message', onMessage);
        resolve();
      }
    };
    w.on('message', onMessage);
    w.once('error', reject);
    w.postMessage(msg);
  });
}

async function main() {
  const workers = Number(process.env.CTXDOCTOR_WORKERS || 2);
  const rounds = Number(process.env.CTXDOCTOR_ROUNDS || 3);
  const spans = Number(process.env.CTXDOCTOR_SPANS_PER_TASK || 10);
  const provider = makeProvider();
  const tracer = provider.getTracer('main');
  const pool = Array.from({ length: workers }, () => new Worker(__filename));
  for (let round = 0; round < rounds; round++) {
    const dispatch = tracer.startSpan('dispatch', { kind: api.SpanKind.SERVER });
    record(dispatch);
    await Promise.all(pool.map((w) => ask(w, { round, spans }, 'done')));
    dispatch.end();
    await new Promise((r) => setTimeout(r, 5)); // idle time between requests
  }
  await Promise.all(pool.map((w) => ask(w, 'exit', 'flushed')));
  await provider.shutdown();
  flushIds();
}

if (isMainThread) {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
} else {
  worker();
}
