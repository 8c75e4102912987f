'use strict';
// The seed's worker.js: a tracer from the API alone, no SDK started in this isolate.
const path = require('node:path');
const { workerData, parentPort } = require('node:worker_threads');

const { trace } = require(path.resolve(__dirname, '../../../fixtures/apps/node/node_modules/@opentelemetry/api'));
const tracer = trace.getTracer('worker');

tracer.startActiveSpan('worker_process', (span) => {
  const result = workerData * 2;
  span.end();
  parentPort.postMessage(result);
});
