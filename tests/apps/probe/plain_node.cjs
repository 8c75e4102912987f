'use strict';
// The CommonJS twin of plain_node.mjs: no OpenTelemetry, a worker thread and a forked child.
const { Worker } = require('node:worker_threads');
const { fork } = require('node:child_process');

if (process.argv[2] === 'child') {
  process.on('message', (m) => {
    process.send(m + 1);
    process.disconnect();
  });
} else {
  const worker = new Worker('require("node:worker_threads").parentPort.postMessage(6 * 7);', { eval: true });
  worker.once('message', (answer) => {
    const child = fork(__filename, ['child']);
    child.once('message', (n) => {
      console.log(`answer ${answer}; child ${n}; preload ${globalThis.USER_PRELOAD ?? 'none'}`);
      process.exitCode = Number(process.env.PLAIN_EXIT || 0);
    });
    child.send(41);
  });
}
