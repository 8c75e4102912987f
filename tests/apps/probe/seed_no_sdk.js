'use strict';
// The worker_threads article's "The Problem", as written: the main thread runs an SDK and starts
// a Worker inside its process_data span; the worker only asks the API for a tracer, so with no
// SDK in its isolate every span it makes is a no-op and nothing it does is ever exported.
const path = require('node:path');
const { Worker } = require('node:worker_threads');

const NODE_MODULES = path.resolve(__dirname, '../../../fixtures/apps/node/node_modules');
const load = (name) => require(path.join(NODE_MODULES, name));
const { trace } = load('@opentelemetry/api');
const { NodeSDK } = load('@opentelemetry/sdk-node');

const sdk = new NodeSDK({ serviceName: 'seed', metricReaders: [], logRecordProcessors: [] });
sdk.start();
const tracer = trace.getTracer('main');

function processInWorker(data) {
  return tracer.startActiveSpan('process_data', (span) => {
    return new Promise((resolve) => {
      const worker = new Worker(path.join(__dirname, 'seed_no_sdk_worker.js'), { workerData: data });
      worker.on('message', (result) => {
        span.end();
        resolve(result);
      });
    });
  });
}

async function main() {
  const tasks = Number(process.env.SEED_TASKS || 2);
  for (let i = 0; i < tasks; i++) console.log(`result ${await processInWorker(i)}`);
  await sdk.shutdown();
}

main();
