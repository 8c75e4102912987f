// An ES module app with no OpenTelemetry at all: a worker thread and a child process, each
// printing; the exit code comes from PLAIN_EXIT so a test can see it passed on unchanged.
import { Worker } from 'node:worker_threads';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const here = fileURLToPath(import.meta.url);
const worker = new Worker('const { parentPort } = require("node:worker_threads"); parentPort.postMessage(6 * 7);', {
  eval: true,
});
const answer = await new Promise((resolve) => worker.once('message', resolve));
await new Promise((resolve) => worker.once('exit', resolve));
const out = await new Promise((resolve, reject) =>
  execFile(process.execPath, ['-e', 'console.log("child " + process.argv.length)'], (err, stdout) =>
    err ? reject(err) : resolve(stdout.trim()),
  ),
);
console.log(`answer ${answer}; ${out}; preload ${globalThis.USER_PRELOAD ?? 'none'}; ${here.endsWith('.mjs')}`);
process.exitCode = Number(process.env.PLAIN_EXIT || 0);
