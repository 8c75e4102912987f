'use strict';
// The Node.js side of `ctxdoctor run`'s probe: plain facts about where work changes thread or
// process, appended as JSON lines to $CTXDOCTOR_PROBE_FACTS. Loaded with NODE_OPTIONS=--require,
// which Node.js applies to CommonJS and ES module entry points, to every worker thread, and (by
// inheriting the environment) to every child process.
//
// Facts: `unit` (this isolate started: pid, thread id), `dispatch` (new Worker, postMessage to a
// worker, child_process.fork/spawn/exec*, ChildProcess#send, with the span active there, whether
// a W3C carrier went along, and the first stack frame of the app's own code), `register` (a
// listener bound to a span's context, or an interval set up inside a span, with the app's line),
// `start` (a root span began in this isolate), `exit` (whether an OpenTelemetry SDK was ever
// registered here).
//
// It never changes the app: it reads the OpenTelemetry API's global registration (a Symbol.for
// key on globalThis) instead of importing the app's packages, wraps functions only to observe
// their arguments and results, and skips whatever it cannot do (one stderr line under
// CTXDOCTOR_PROBE_VERBOSE=1).
const fs = require('node:fs');
const path = require('node:path');

const FACTS = process.env.CTXDOCTOR_PROBE_FACTS;
const VERBOSE = process.env.CTXDOCTOR_PROBE_VERBOSE === '1';
const API_KEY = Symbol.for('opentelemetry.js.api.1');
const SPAN_KEY = Symbol.for('OpenTelemetry Context Key SPAN');
const MARK = Symbol.for('ctxdoctor.probe');
const HERE = __dirname + path.sep;
const said = new Set();

function skip(what, error) {
  if (!VERBOSE || said.has(what)) return;
  said.add(what);
  try {
    process.stderr.write(`ctxdoctor probe: skipped ${what}: ${error && error.message ? error.message : error}\n`);
  } catch {}
}

if (FACTS && !globalThis[MARK]) {
  globalThis[MARK] = true;
  try {
    install();
  } catch (error) {
    skip('loading', error);
  }
}

function install() {
  const wt = require('node:worker_threads');
  const cp = require('node:child_process');
  const { performance } = require('node:perf_hooks');
  const origin = BigInt(Math.round(performance.timeOrigin * 1000));
  const tid = wt.threadId;
  const pid = process.pid;
  let fd = -1;
  let seq = 0;
  let sdkSeen = false;

  const now = () => String(origin * 1000n + BigInt(Math.round(performance.now() * 1e6)));

  // Facts are buffered and written together once the current synchronous job is done (a
  // microtask), so a burst of dispatches costs one write. Facts that are rare and must outlive an
  // abrupt end (this unit started, an SDK appeared, the unit exits) are written at once, with
  // whatever is buffered before them. 'exit' listeners run on process.exit(), an uncaught
  // exception and a normal end; what a kill or worker.terminate() can cut off is only what the
  // job it interrupted dispatched.
  let buffered = [];
  let size = 0;
  let scheduled = false;
  const FLUSH_AT = 1 << 16;

  function flush() {
    scheduled = false;
    if (buffered.length === 0) return;
    const text = buffered.length === 1 ? buffered[0] : buffered.join('');
    buffered = [];
    size = 0;
    try {
      if (fd < 0) fd = fs.openSync(FACTS, 'a', 0o600);
      fs.writeSync(fd, text);
    } catch (error) {
      skip('writing facts', error);
    }
  }

  function emit(rec, urgent) {
    try {
      rec.pid = pid;
      rec.tid = tid;
      rec.rt = 'node';
      const line = JSON.stringify(rec) + '\n';
      buffered.push(line);
      size += line.length;
    } catch (error) {
      skip('writing facts', error);
      return;
    }
    if (urgent || size >= FLUSH_AT) flush();
    else if (!scheduled) {
      scheduled = true;
      queueMicrotask(flush);
    }
  }

  // --- what the app's OpenTelemetry API holds, read from its global registration ---------------
  function registry() {
    return globalThis[API_KEY];
  }

  function activeSpan() {
    try {
      const reg = registry();
      const mgr = reg && reg.context;
      if (!mgr || typeof mgr.active !== 'function') return null;
      return spanOf(mgr.active());
    } catch (error) {
      skip('reading the active span', error);
      return null;
    }
  }

  function sdkRegistered() {
    const reg = registry();
    const provider = reg && reg.trace;
    if (!provider) return false;
    const delegate = typeof provider.getDelegate === 'function' ? provider.getDelegate() : provider;
    return Boolean(delegate) && !/^Noop/.test((delegate.constructor && delegate.constructor.name) || '');
  }

  // Watch the registration so spans are noted from the first one: an accessor on the API's key
  // (it assigns the key once, then sets `trace`, `context`, ... on the object it stored).
  function watchRegistry() {
    let value = globalThis[API_KEY];
    if (value !== undefined) {
      watchTrace(value);
      return;
    }
    Object.defineProperty(globalThis, API_KEY, {
      configurable: true,
      enumerable: false,
      get: () => value,
      set: (v) => {
        value = v;
        Object.defineProperty(globalThis, API_KEY, { value: v, writable: true, configurable: true, enumerable: false });
        try {
          watchTrace(v);
        } catch (error) {
          skip('watching the OpenTelemetry registration', error);
        }
      },
    });
  }

  function watchTrace(reg) {
    if (!reg || typeof reg !== 'object') return;
    watchKey(reg, 'trace', onProvider);
    watchKey(reg, 'context', onContextManager);
  }

  function watchKey(reg, key, found) {
    if (reg[key]) {
      found(reg[key]);
      return;
    }
    let value;
    Object.defineProperty(reg, key, {
      configurable: true,
      enumerable: true,
      get: () => value,
      set: (v) => {
        value = v;
        Object.defineProperty(reg, key, { value: v, writable: true, configurable: true, enumerable: true });
        found(v);
      },
    });
  }

  // Functions the app bound to a context with a span (context.bind(ctx, fn)), and that span: such
  // a function runs every later call in that one span's context, so registering it as a listener
  // is noted. Emitters bound whole (context.bind(ctx, emitter)) are set apart: instrumentations
  // bind every request's emitters that way, and their listeners (several per request) are the
  // request's own; noting each would cost a stack capture and a fact per listener per request.
  const boundSpan = new WeakMap();
  const boundEmitters = new WeakSet();

  function spanOf(ctx) {
    const span = ctx && typeof ctx.getValue === 'function' ? ctx.getValue(SPAN_KEY) : undefined;
    const sc = span && typeof span.spanContext === 'function' ? span.spanContext() : null;
    if (!sc || !sc.traceId || /^0+$/.test(sc.traceId)) return null;
    return { trace: sc.traceId, span: sc.spanId };
  }

  function onContextManager(mgr) {
    try {
      const proto = mgr && Object.getPrototypeOf(mgr);
      if (!proto || typeof proto.bind !== 'function' || proto.bind[MARK]) return;
      const original = proto.bind;
      const bind = function bind(ctx, target) {
        const out = original.apply(this, arguments);
        try {
          if (typeof out === 'function' && out !== target) {
            const span = spanOf(ctx);
            if (span) boundSpan.set(out, span);
          } else if (out === target && target !== null && typeof target === 'object') {
            boundEmitters.add(target);
          }
        } catch (error) {
          skip('noting a bound function', error);
        }
        return out;
      };
      bind[MARK] = true;
      proto.bind = bind;
    } catch (error) {
      skip('watching the context manager', error);
    }
  }

  function onProvider(proxy) {
    try {
      const patchDelegate = (d) => {
        if (!d || /^Noop/.test((d.constructor && d.constructor.name) || '')) return;
        if (!sdkSeen) {
          sdkSeen = true;
          emit({ ev: 'sdk', t: now() }, true);
        }
        const tracer = typeof d.getTracer === 'function' ? d.getTracer('ctxdoctor-probe') : null;
        const proto = tracer && Object.getPrototypeOf(tracer);
        if (proto && typeof proto.startSpan === 'function' && !proto.startSpan[MARK]) {
          const original = proto.startSpan;
          const startSpan = function startSpan() {
            const span = original.apply(this, arguments);
            try {
              noteStart(span);
            } catch (error) {
              skip('noting a span start', error);
            }
            return span;
          };
          startSpan[MARK] = true;
          proto.startSpan = startSpan;
        }
      };
      if (typeof proxy.getDelegate === 'function') {
        patchDelegate(proxy.getDelegate());
        if (typeof proxy.setDelegate === 'function') {
          const setDelegate = proxy.setDelegate;
          proxy.setDelegate = function (d) {
            const out = setDelegate.apply(this, arguments);
            patchDelegate(d);
            return out;
          };
        }
      } else {
        patchDelegate(proxy);
      }
    } catch (error) {
      skip('watching the tracer provider', error);
    }
  }

  function noteStart(span) {
    const parent = span.parentSpanContext ? span.parentSpanContext.spanId : span.parentSpanId;
    if (parent) return;
    const sc = span.spanContext();
    emit({ ev: 'start', t: now(), trace: sc.traceId, span: sc.spanId, parent: null, name: span.name || '' });
  }

  // --- the app's line: the first stack frame outside Node.js, node_modules and the probe --------
  // Whether a library (a frame in node_modules) stood between the app's line and the dispatch:
  // then the library made the call (a pool starting its threads), not the app's own task.
  let lastViaLibrary = false;
  const asFrames = (_e, frames) => frames;
  function frames(limit, from) {
    const saved = Error.stackTraceLimit;
    const prepare = Error.prepareStackTrace;
    try {
      Error.stackTraceLimit = limit;
      Error.prepareStackTrace = asFrames;
      const holder = {};
      Error.captureStackTrace(holder, from);
      return holder.stack;
    } finally {
      Error.stackTraceLimit = saved;
      Error.prepareStackTrace = prepare;
    }
  }

  // The cost of a capture grows with its frames, and the app's line is nearly always the one
  // that called the probe's wrapper (`caller`, the function the app called): one frame from
  // there, and a deep stack only when that frame is Node.js's or a library's (or the wrapper is
  // not on the stack).
  function site(caller) {
    let found = caller ? appFrame(frames(1, caller), 1) : undefined;
    if (found === undefined) found = appFrame(frames(24, site), 24);
    return found || null;
  }

  function appFrame(stack, limit) {
    lastViaLibrary = false;
    if (!Array.isArray(stack) || stack.length === 0) return limit === 1 ? undefined : null;
    for (const f of stack) {
      let file = f.getFileName();
      if (!file || file.startsWith('node:') || file.startsWith(HERE)) continue;
      if (file.startsWith('file://')) {
        try {
          file = require('node:url').fileURLToPath(file);
        } catch {}
      }
      if (file.startsWith(HERE)) continue;
      if (file.includes(`${path.sep}node_modules${path.sep}`)) {
        lastViaLibrary = true;
        continue;
      }
      if (!path.isAbsolute(file)) continue;
      return {
        file,
        line: f.getLineNumber(),
        column: f.getColumnNumber(),
        function: f.getFunctionName() || f.getMethodName() || '<anonymous>',
      };
    }
    return stack.length >= limit ? undefined : null; // undefined: the stack was cut short, look deeper
  }

  function hasCarrier(value, depth = 0) {
    if (value === null || typeof value !== 'object' || depth > 3) return false;
    try {
      if (Object.prototype.hasOwnProperty.call(value, 'traceparent') || Object.prototype.hasOwnProperty.call(value, 'TRACEPARENT'))
        return true;
      if (ArrayBuffer.isView(value) || value instanceof ArrayBuffer) return false;
      const keys = Object.keys(value);
      for (let i = 0; i < keys.length && i < 64; i++) {
        if (hasCarrier(value[keys[i]], depth + 1)) return true;
      }
    } catch {}
    return false;
  }

  function dispatch(api, carrierIn, extra, caller) {
    const rec = { ev: 'dispatch', id: `${pid}.${tid}.${++seq}`, api, t: now(), span: activeSpan(), carrier: false, site: site(caller) };
    try {
      rec.carrier = carrierIn.some((v) => hasCarrier(v));
    } catch {}
    rec.task = rec.site !== null && !lastViaLibrary;
    Object.assign(rec, extra);
    return rec;
  }

  // Tasks handed to a pool: the object the app passed is later posted by the pool's own code, where
  // the app's line and active span are no longer on the stack; remember them by the object.
  const pending = new WeakMap();
  // MessageChannel ports, paired, and the worker each far end was given to.
  const siblings = new WeakMap();
  const portThread = new WeakMap();

  // --- worker_threads -------------------------------------------------------------------------
  try {
    const OrigWorker = wt.Worker;
    class Worker extends OrigWorker {
      constructor(filename, options) {
        const rec = dispatch('worker_threads.Worker', [options && options.workerData, options && options.env], {}, Worker);
        super(filename, options);
        try {
          rec.target_tid = this.threadId;
          emit(rec);
        } catch (error) {
          skip('noting a Worker', error);
        }
      }
    }
    Object.defineProperty(Worker, 'name', { value: 'Worker' });
    const workerPost = OrigWorker.prototype.postMessage;
    OrigWorker.prototype.postMessage = function postMessage(value, transfer) {
      try {
        noteTransfer(transfer, this.threadId);
        noteMessage('worker_threads.Worker.postMessage', value, this.threadId, postMessage);
      } catch (error) {
        skip('noting a postMessage', error);
      }
      return workerPost.apply(this, arguments);
    };
    wt.Worker = Worker;

    const OrigChannel = wt.MessageChannel;
    class MessageChannel extends OrigChannel {
      constructor() {
        super();
        try {
          siblings.set(this.port1, this.port2);
          siblings.set(this.port2, this.port1);
        } catch {}
      }
    }
    Object.defineProperty(MessageChannel, 'name', { value: 'MessageChannel' });
    wt.MessageChannel = MessageChannel;

    const portPost = wt.MessagePort.prototype.postMessage;
    wt.MessagePort.prototype.postMessage = function postMessage(value, transfer) {
      try {
        const target = portThread.get(this);
        if (target !== undefined) noteMessage('MessagePort.postMessage', value, target, postMessage);
      } catch (error) {
        skip('noting a port message', error);
      }
      return portPost.apply(this, arguments);
    };
  } catch (error) {
    skip('worker_threads', error);
  }

  function noteTransfer(transfer, threadId) {
    if (!Array.isArray(transfer)) return;
    for (const item of transfer) {
      const sibling = siblings.get(item);
      if (sibling) portThread.set(sibling, threadId);
    }
  }

  // The pool's message wraps the app's task (piscina: `task`) or its arguments (workerpool: `params`).
  function taskOf(value) {
    if (!value || typeof value !== 'object') return undefined;
    for (const v of [value, value.task, value.params]) {
      if (v && typeof v === 'object' && pending.has(v)) return pending.get(v);
    }
    return undefined;
  }

  function noteMessage(api, value, targetTid, caller) {
    let rec = null;
    const known = taskOf(value);
    if (known) {
      rec = known;
      rec.api = `${known.api} -> ${api}`;
    } else {
      rec = dispatch(api, [value], {}, caller);
    }
    rec.target_tid = targetTid;
    rec.t_posted = now();
    emit(rec);
  }

  // Pools built on worker_threads: the app's call is the dispatch it wrote.
  try {
    const Module = require('node:module');
    const load = Module._load;
    Module._load = function (request) {
      const exported = load.apply(this, arguments);
      try {
        if (request === 'piscina' || request === 'workerpool') hookPool(request, exported);
      } catch (error) {
        skip(`hooking ${request}`, error);
      }
      return exported;
    };
  } catch (error) {
    skip('module loading', error);
  }

  function hookPool(name, exported) {
    if (!exported) return;
    if (name === 'piscina') {
      hookMethod(name, (exported.Piscina || exported).prototype, 'run', 0);
      return;
    }
    // workerpool exports a factory, not its Pool class: reach the prototype through the first pool.
    if (typeof exported.pool !== 'function' || exported.pool[MARK]) return;
    const factory = exported.pool;
    const pool = function () {
      const instance = factory.apply(this, arguments);
      try {
        hookMethod(name, Object.getPrototypeOf(instance), 'exec', 1);
      } catch (error) {
        skip('workerpool', error);
      }
      return instance;
    };
    pool[MARK] = true;
    exported.pool = pool;
  }

  // The pool's method the app calls; `key` is the argument the pool later posts on (the task).
  function hookMethod(name, proto, method, key) {
    if (!proto || typeof proto[method] !== 'function' || proto[method][MARK]) return;
    const original = proto[method];
    const wrapped = function () {
      try {
        const task = arguments[key];
        const rec = dispatch(`${name}.${method}`, [arguments[0], arguments[1]], { task: true }, wrapped);
        if (task && typeof task === 'object') pending.set(task, rec);
        else emit(rec);
      } catch (error) {
        skip(`${name}.${method}`, error);
      }
      return original.apply(this, arguments);
    };
    wrapped[MARK] = true;
    proto[method] = wrapped;
  }

  // --- callbacks that keep a span's context: listeners bound to it, intervals set up inside it ---
  // A listener bound with context.bind runs every event in the span it was bound in; a timer's
  // callback runs in the context it was set up in (AsyncLocalStorage follows timers), so every
  // tick of an interval set up inside a span runs in that span. Both are noted with the app's
  // line; an ordinary listener costs one WeakMap lookup and is not noted.
  function register(api, span, caller, extra) {
    const rec = { ev: 'register', id: `${pid}.${tid}.${++seq}`, api, t: now(), span, site: site(caller) };
    Object.assign(rec, extra);
    emit(rec);
  }

  function eventName(type) {
    return typeof type === 'symbol' ? String(type.description || 'symbol') : String(type).slice(0, 80);
  }

  try {
    const events = require('node:events');
    const proto = events.EventEmitter.prototype;
    const wrapListen = (name, original) => {
      const wrapped = function (type, listener) {
        try {
          const span = typeof listener === 'function' ? boundSpan.get(listener) : undefined;
          if (span !== undefined && !boundEmitters.has(this))
            register(`EventEmitter.${name}`, span, wrapped, { event: eventName(type), bound: true });
        } catch (error) {
          skip(`EventEmitter.${name}`, error);
        }
        return original.apply(this, arguments);
      };
      Object.defineProperty(wrapped, 'name', { value: original.name });
      Object.defineProperty(wrapped, 'length', { value: original.length });
      wrapped[MARK] = true;
      return wrapped;
    };
    // `on` and `addListener` are one function: keep them one.
    const add = proto.addListener;
    if (typeof add === 'function' && !add[MARK]) {
      const wrapped = wrapListen('on', add);
      if (proto.on === add) proto.on = wrapped;
      proto.addListener = wrapped;
    }
    for (const name of ['once', 'prependListener', 'prependOnceListener']) {
      if (typeof proto[name] === 'function' && !proto[name][MARK]) proto[name] = wrapListen(name, proto[name]);
    }
  } catch (error) {
    skip('EventEmitter', error);
  }

  try {
    const timers = require('node:timers');
    const original = globalThis.setInterval;
    if (typeof original === 'function' && !original[MARK]) {
      const setInterval = function setInterval(callback) {
        try {
          const bound = typeof callback === 'function' ? boundSpan.get(callback) : undefined;
          const span = bound || activeSpan();
          if (span) register('setInterval', span, setInterval, { bound: bound !== undefined });
        } catch (error) {
          skip('setInterval', error);
        }
        return original.apply(this, arguments);
      };
      Object.defineProperty(setInterval, 'length', { value: original.length });
      for (const key of Object.getOwnPropertySymbols(original)) setInterval[key] = original[key];
      setInterval[MARK] = true;
      globalThis.setInterval = setInterval;
      if (timers.setInterval === original) timers.setInterval = setInterval;
    }
  } catch (error) {
    skip('setInterval', error);
  }

  // --- child_process --------------------------------------------------------------------------
  try {
    for (const name of ['fork', 'spawn', 'exec', 'execFile']) {
      const original = cp[name];
      if (typeof original !== 'function') continue;
      const wrapped = function () {
        let rec = null;
        try {
          const args = Array.from(arguments);
          const opts = args.find((a) => a && typeof a === 'object' && !Array.isArray(a));
          rec = dispatch(`child_process.${name}`, [opts && opts.env], {}, wrapped);
          rec.env_carrier = rec.carrier;
          rec.inherit_env = !(opts && opts.env);
          if (rec.inherit_env) rec.carrier = Boolean(process.env.TRACEPARENT);
          rec.command = String(args[0]).split(/[\\/]/).pop().slice(0, 80);
        } catch (error) {
          skip(`child_process.${name}`, error);
        }
        const child = original.apply(this, arguments);
        if (rec) {
          try {
            rec.child_pid = child && child.pid;
            emit(rec);
          } catch {}
        }
        watchSend(child);
        return child;
      };
      Object.defineProperty(wrapped, 'name', { value: name });
      if (original[Symbol.for('nodejs.util.promisify.custom')])
        wrapped[Symbol.for('nodejs.util.promisify.custom')] = original[Symbol.for('nodejs.util.promisify.custom')];
      cp[name] = wrapped;
    }
  } catch (error) {
    skip('child_process', error);
  }

  // Node.js gives each child with an IPC channel its own `send` (set up per instance, not on the
  // prototype): observe that one.
  function watchSend(child) {
    try {
      const send = child && child.send;
      if (typeof send !== 'function' || send[MARK]) return;
      const wrapped = function (message) {
        try {
          const known = taskOf(message);
          const rec = known || dispatch('ChildProcess.send', [message], {}, wrapped);
          if (known) rec.api = `${known.api} -> ChildProcess.send`;
          rec.child_pid = child.pid;
          rec.t_posted = now();
          emit(rec);
        } catch (error) {
          skip('ChildProcess.send', error);
        }
        return send.apply(this, arguments);
      };
      wrapped[MARK] = true;
      child.send = wrapped;
    } catch (error) {
      skip('ChildProcess.send', error);
    }
  }

  try {
    require('node:module').syncBuiltinESMExports();
  } catch (error) {
    skip('ES module exports', error);
  }

  watchRegistry();
  emit({
    ev: 'unit',
    t: now(),
    main: wt.isMainThread,
    ppid: process.ppid,
    argv: wt.isMainThread ? [path.basename(process.argv0 || 'node'), ...process.argv.slice(1, 3).map((a) => path.basename(a))] : [],
  }, true);
  let exited = false;
  const onExit = () => {
    if (exited) return;
    exited = true;
    emit({ ev: 'exit', t: now(), sdk: sdkSeen || sdkRegistered() }, true);
    try {
      if (fd >= 0) fs.closeSync(fd);
    } catch {}
  };
  process.on('exit', onExit);
}
