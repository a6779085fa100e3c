'use strict';
// One local Lambda execution environment, in a worker thread started by lambda-runner.ts.
//
// `--import tsx` in execArgv does not reach worker threads, so this CommonJS bootstrap registers tsx's require hook
// itself, then loads the handler's TypeScript entry once (the init phase) and serves invocations one at a time.
// process.env is the function's own environment (the Worker `env` option), so module-scope SDK clients read the
// right endpoints, region and credentials, exactly as in Lambda.
//
// Crash faults (`crash=HANDLER@STEP:N`): when workerData.crashes is not empty, globalThis.__corpusFaultPoint (what
// lambda/shared/fault-points.ts calls) is installed before the entry loads. A (handler, step) that matches a crash
// takes one of its N from counters shared with the parent and every other worker of the function, notes which crash
// it was for the parent, and ends this thread at once with process.exit(1): no later line of the invocation runs (no
// catch, no finally), as when Lambda kills a timed-out or out-of-memory runtime. The step `return` is checked here,
// after the handler resolved and before its answer is sent.
//
// Protocol (parent <-> worker):
//   worker -> parent  { type: 'ready', initError?: SerializedError }
//   parent -> worker  { type: 'invoke', requestId, payload: string (JSON), deadline: epoch ms }
//   worker -> parent  { type: 'result', requestId, ok: true, payload: string (JSON) }
//                   | { type: 'result', requestId, ok: false, error: SerializedError }

const path = require('node:path');
const { format } = require('node:util');
const { parentPort, workerData } = require('node:worker_threads');

require('tsx/cjs');

const {
  entry,
  handlerExport,
  functionName,
  functionVersion,
  invokedFunctionArn,
  memoryLimitInMB,
  logGroupName,
  logStreamName,
  faultHandler,
  crashes,
  crashCounters,
  deathNote,
} = workerData;

let currentRequestId;

// Lambda's Node.js runtime prefixes console output with the time, request id and level; do the same so the log
// file reads like CloudWatch. (Powertools' Logger writes through its own Console and is left untouched, as there.)
for (const [method, level] of [
  ['log', 'INFO'],
  ['info', 'INFO'],
  ['warn', 'WARN'],
  ['error', 'ERROR'],
  ['debug', 'DEBUG'],
  ['trace', 'TRACE'],
]) {
  const stream = level === 'WARN' || level === 'ERROR' ? process.stderr : process.stdout;
  console[method] = (...args) => {
    const message = format(...args).replace(/\n/g, '\r');
    stream.write(`${new Date().toISOString()}\t${currentRequestId ?? 'undefined'}\t${level}\t${message}\n`);
  };
}

function serializeError(error, forcedName) {
  if (error instanceof Error) {
    return {
      name: forcedName ?? (typeof error.name === 'string' && error.name !== '' ? error.name : 'Error'),
      message: String(error.message),
      stack: typeof error.stack === 'string' ? error.stack.split('\n') : [],
    };
  }
  return {
    name: forcedName ?? 'Error',
    message: typeof error === 'string' ? error : format('%o', error),
    stack: [],
  };
}

const RETURN_STEP = 'return';
const crashFaults = Array.isArray(crashes) && crashes.length > 0;
// [left0, fired0, left1, fired1, ...], shared with the parent and the function's other workers.
const counters = crashFaults ? new Int32Array(crashCounters) : undefined;
const note = crashFaults ? new Int32Array(deathNote) : undefined;

/** Dies here if a crash fault for (handler, step) has any of its N left; otherwise does nothing. */
function crashAt(handlerName, step) {
  for (let i = 0; i < crashes.length; i += 1) {
    const crash = crashes[i];
    if (crash.handler !== handlerName || crash.step !== step) continue;
    for (;;) {
      const left = Atomics.load(counters, 2 * i);
      if (left <= 0) break;
      // Only the thread whose exchange succeeds takes this one: N is exact however many workers race for it.
      if (Atomics.compareExchange(counters, 2 * i, left, left - 1) !== left) continue;
      Atomics.add(counters, 2 * i + 1, 1);
      Atomics.store(note, 0, i + 1);
      process.exit(1);
    }
  }
}

if (crashFaults) globalThis.__corpusFaultPoint = crashAt;

let handler;
let initError;
try {
  const loaded = require(entry);
  handler = loaded[handlerExport] ?? (loaded.default && loaded.default[handlerExport]);
  if (typeof handler !== 'function') {
    initError = {
      name: 'Runtime.HandlerNotFound',
      message: `${path.basename(entry)}.${handlerExport} is undefined or not exported`,
      stack: [],
    };
  }
} catch (error) {
  const notFound = error && error.code === 'MODULE_NOT_FOUND';
  initError = serializeError(error, notFound ? 'Runtime.ImportModuleError' : undefined);
}
parentPort.postMessage({ type: 'ready', initError });

function invokeHandler(event, context) {
  // Callback-style handlers (three parameters) finish when they call back; the others return a value or promise.
  if (handler.length >= 3) {
    return new Promise((resolve, reject) => {
      const callback = (error, result) => (error ? reject(error) : resolve(result));
      const returned = handler(event, context, callback);
      if (returned && typeof returned.then === 'function') returned.then(resolve, reject);
    });
  }
  return Promise.resolve().then(() => handler(event, context));
}

parentPort.on('message', async (message) => {
  if (message.type !== 'invoke') return;
  const { requestId, deadline } = message;
  if (initError) {
    parentPort.postMessage({ type: 'result', requestId, ok: false, error: initError });
    return;
  }
  currentRequestId = requestId;
  const context = {
    awsRequestId: requestId,
    functionName,
    functionVersion,
    invokedFunctionArn,
    memoryLimitInMB: String(memoryLimitInMB),
    logGroupName,
    logStreamName,
    callbackWaitsForEmptyEventLoop: true,
    getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
  };
  let result;
  try {
    result = await invokeHandler(JSON.parse(message.payload), context);
  } catch (error) {
    parentPort.postMessage({ type: 'result', requestId, ok: false, error: serializeError(error) });
    return;
  }
  if (crashFaults) crashAt(faultHandler, RETURN_STEP);
  let payload;
  try {
    // A handler returning a function or a symbol gives null, as JSON.stringify would in the real runtime.
    payload = JSON.stringify(result === undefined ? null : result) ?? 'null';
  } catch (error) {
    parentPort.postMessage({
      type: 'result',
      requestId,
      ok: false,
      error: {
        name: 'Runtime.MarshalError',
        message: `Unable to stringify response body: ${error.message}`,
        stack: [],
      },
    });
    return;
  }
  parentPort.postMessage({ type: 'result', requestId, ok: true, payload });
});
