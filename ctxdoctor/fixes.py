"""The fix for each runtime and boundary, citing the exact OpenTelemetry APIs.

Keyed by ``telemetry.sdk.language`` and the boundary crossed. Sources: the OpenTelemetry JS and
Python API docs, opentelemetry-js#3529/#3297 (SDK per worker), cpython#78195 (run_in_executor
does not copy contextvars), the spec's env-carriers (TRACEPARENT for child processes).
"""

from __future__ import annotations

from ctxdoctor.findings import Fix
from ctxdoctor.units import Boundary

_NODE_THREAD = Fix(
    title="Carry the context into the worker thread (worker_threads / piscina / workerpool)",
    steps=(
        "In the dispatching span: const carrier = {}; propagation.inject(context.active(), carrier); "
        "pass carrier in workerData, postMessage or the pool task payload.",
        "In the worker: const ctx = propagation.extract(ROOT_CONTEXT, task.carrier); "
        "context.with(ctx, () => tracer.startActiveSpan(...)).",
        "Initialise the SDK inside every worker (each isolate has its own) and call sdk.shutdown() "
        "before the worker exits so its spans are flushed.",
    ),
    apis=(
        "propagation.inject(context.active(), carrier)",
        "propagation.extract(ROOT_CONTEXT, carrier)",
        "context.with(ctx, fn)",
        "NodeSDK.start() in the worker",
    ),
    snippet=(
        "// main thread\n"
        "const carrier = {};\n"
        "propagation.inject(context.active(), carrier);\n"
        "new Worker(file, { workerData: { payload, carrier } });\n"
        "// worker\n"
        "const ctx = propagation.extract(ROOT_CONTEXT, workerData.carrier);\n"
        "context.with(ctx, () => tracer.startActiveSpan('work', span => { ...; span.end(); }));"
    ),
)

_NODE_PROCESS = Fix(
    title="Carry the context into the child process (child_process.fork / spawn)",
    steps=(
        "In the dispatching span: const carrier = {}; propagation.inject(context.active(), carrier); "
        "send it with the job (child.send({ job, carrier })) or, for a one-shot child, as the "
        "TRACEPARENT/TRACESTATE environment variables.",
        "In the child: const ctx = propagation.extract(ROOT_CONTEXT, msg.carrier); "
        "context.with(ctx, () => tracer.startActiveSpan(...)).",
        "Initialise the SDK in the child and await sdk.shutdown() before process.exit().",
    ),
    apis=(
        "propagation.inject(context.active(), carrier)",
        "propagation.extract(ROOT_CONTEXT, carrier)",
        "context.with(ctx, fn)",
        "await sdk.shutdown()",
    ),
    snippet=(
        "// parent\n"
        "const carrier = {};\n"
        "propagation.inject(context.active(), carrier);\n"
        "child.send({ job, carrier });\n"
        "// child\n"
        "process.on('message', (msg) => {\n"
        "  const ctx = propagation.extract(ROOT_CONTEXT, msg.carrier);\n"
        "  context.with(ctx, () => tracer.startActiveSpan('job', span => { ...; span.end(); }));\n"
        "});"
    ),
)

_NODE_ASYNC = Fix(
    title="Keep the context across the async hop on the same thread",
    steps=(
        "Register the AsyncLocalStorageContextManager (NodeSDK does by default; a bare BasicTracerProvider does not).",
        "For callbacks and EventEmitters that a library queues outside the async chain, bind them: "
        "context.bind(context.active(), fnOrEmitter), or run the work in context.with(ctx, fn).",
    ),
    apis=("AsyncLocalStorageContextManager", "context.bind(context.active(), fn)", "context.with(ctx, fn)"),
    snippet="emitter = context.bind(context.active(), emitter);\nsetImmediate(context.bind(context.active(), work));",
)

_PY_THREAD = Fix(
    title="Copy the context into the thread (threading.Thread / ThreadPoolExecutor / run_in_executor)",
    steps=(
        "Instrument threading once at start-up: from opentelemetry.instrumentation.threading import "
        "ThreadingInstrumentor; ThreadingInstrumentor().instrument() (covers Thread, Timer and "
        "ThreadPoolExecutor.submit).",
        "Or copy the context by hand: ctx = contextvars.copy_context(); executor.submit(ctx.run, fn, *args).",
        "In asyncio, loop.run_in_executor does not copy contextvars (cpython#78195): use "
        "asyncio.to_thread(fn, *args), which does, or loop.run_in_executor(ex, "
        "contextvars.copy_context().run, fn, *args).",
    ),
    apis=(
        "ThreadingInstrumentor().instrument()",
        "contextvars.copy_context().run",
        "asyncio.to_thread",
    ),
    snippet=(
        "import contextvars\n"
        "ctx = contextvars.copy_context()\n"
        "future = executor.submit(ctx.run, render_chart, data)\n"
        "# asyncio\n"
        "result = await asyncio.to_thread(render_chart, data)"
    ),
)

_PY_PROCESS = Fix(
    title="Carry the context into the child process (multiprocessing / ProcessPoolExecutor / subprocess)",
    steps=(
        "In the dispatching span: carrier = {}; opentelemetry.propagate.inject(carrier); pass carrier "
        "with the task arguments (or TRACEPARENT in the env of a subprocess).",
        "In the child: ctx = opentelemetry.propagate.extract(carrier); with "
        "tracer.start_as_current_span('task', context=ctx): ...",
        "Initialise the SDK in the pool initializer (or after fork) and call provider.shutdown() "
        "(or force_flush()) before the child exits; never leave through os._exit with spans open.",
    ),
    apis=(
        "opentelemetry.propagate.inject(carrier)",
        "opentelemetry.propagate.extract(carrier)",
        "tracer.start_as_current_span(name, context=ctx)",
        "Pool(initializer=init_sdk)",
    ),
    snippet=(
        "carrier = {}\n"
        "propagate.inject(carrier)\n"
        "pool.apply_async(task, (payload, carrier))\n"
        "# in the child\n"
        "def task(payload, carrier):\n"
        "    with tracer.start_as_current_span('task', context=propagate.extract(carrier)):\n"
        "        ..."
    ),
)

_PY_ASYNC = Fix(
    title="Keep the context across the asyncio hop",
    steps=(
        "asyncio tasks copy contextvars when created; create the task inside the span "
        "(asyncio.create_task within the `with` block).",
        "For callbacks registered outside the span, run them in a copied context: "
        "loop.call_soon(cb, context=contextvars.copy_context()).",
    ),
    apis=("asyncio.create_task", "contextvars.copy_context()", "loop.call_soon(cb, context=ctx)"),
)

_GENERIC = {
    Boundary.THREAD: Fix(
        title="Propagate the context into the worker thread",
        steps=(
            "Capture the current context where the work is dispatched and make it current in the worker "
            "before the first span starts (Java: Context.current().wrap(runnable) or "
            "Context.taskWrapping(executor); Go: pass ctx into the goroutine; .NET: pass an "
            "ActivityContext to StartActivity).",
        ),
        apis=("Context.current().wrap", "Context.taskWrapping(executor)"),
    ),
    Boundary.PROCESS: Fix(
        title="Propagate the context into the child process",
        steps=(
            "Inject the context into a carrier (W3C traceparent) with the job or as the TRACEPARENT "
            "environment variable, extract it in the child and start its first span as a child of it.",
        ),
        apis=("TextMapPropagator.inject", "TextMapPropagator.extract", "TRACEPARENT"),
    ),
    Boundary.ASYNC: Fix(
        title="Keep the context across the async hop",
        steps=("Make the captured context current in the callback before starting spans.",),
        apis=("context attach / with",),
    ),
}

_FIXES: dict[tuple[str, Boundary], Fix] = {
    ("nodejs", Boundary.THREAD): _NODE_THREAD,
    ("nodejs", Boundary.PROCESS): _NODE_PROCESS,
    ("nodejs", Boundary.ASYNC): _NODE_ASYNC,
    ("python", Boundary.THREAD): _PY_THREAD,
    ("python", Boundary.PROCESS): _PY_PROCESS,
    ("python", Boundary.ASYNC): _PY_ASYNC,
}


def fix_for(language: str | None, boundary: Boundary) -> Fix:
    return _FIXES.get((language or "", boundary), _GENERIC[boundary])


_FLUSH = {
    "nodejs": Fix(
        title="Flush spans before a worker or process exits",
        steps=(
            "Await sdk.shutdown() (or tracerProvider.forceFlush()) before process.exit() and at the end "
            "of every worker thread; signal workers to shut down instead of worker.terminate().",
            "End every span on every path (try/finally), so the parent is exported with its children.",
        ),
        apis=("await sdk.shutdown()", "tracerProvider.forceFlush()", "span.end() in finally"),
    ),
    "python": Fix(
        title="Flush spans before a worker or process exits",
        steps=(
            "Call trace.get_tracer_provider().shutdown() (or force_flush()) before the process exits; "
            "os._exit() and killed pool workers skip atexit, so flush explicitly first.",
            "End every span on every path (use `with tracer.start_as_current_span(...)`).",
        ),
        apis=("TracerProvider.shutdown()", "TracerProvider.force_flush()", "with start_as_current_span"),
    ),
}
_FLUSH_GENERIC = Fix(
    title="Flush spans before a worker or process exits",
    steps=(
        "Shut the SDK's tracer provider down (flushing its span processors) before the process or worker "
        "exits, and end every span on every path.",
    ),
    apis=("TracerProvider.shutdown()", "forceFlush()"),
)


def flush_fix(language: str | None) -> Fix:
    return _FLUSH.get(language or "", _FLUSH_GENERIC)


# -- context leaks: a context captured at set-up time and reused for later work ------------------
_LEAK = {
    "nodejs": Fix(
        title="Bind the context when the work is dispatched, not when the listener, timer or pool is set up",
        steps=(
            "Do not wrap a long-lived listener at subscribe time (emitter.on(evt, context.bind(context.active(), "
            "fn)) captures the subscriber's span forever); carry the context with each message and run the "
            "handler in it: emitter.emit(evt, { payload, ctx: context.active() }) and in the listener "
            "context.with(msg.ctx, () => handle(msg.payload)).",
            "Start timers and background loops outside any request: context.with(ROOT_CONTEXT, () => "
            "setInterval(tick, ms)), so every tick is a root of its own trace.",
            "Create pools and connections at start-up (or under context.with(ROOT_CONTEXT, ...)) and bind "
            "each callback per call: pool.query(sql, context.bind(context.active(), cb)).",
        ),
        apis=("context.with(ctx, fn)", "context.with(ROOT_CONTEXT, fn)", "context.bind(context.active(), fn) per call"),
        snippet=(
            "// per message, not at subscribe time\n"
            "emitter.emit('order', { order, ctx: context.active() });\n"
            "emitter.on('order', (msg) => context.with(msg.ctx, () => handleOrder(msg.order)));\n"
            "// background timers start from the root context\n"
            "context.with(ROOT_CONTEXT, () => setInterval(flushMetrics, 1000));"
        ),
    ),
    "python": Fix(
        title="Start long-lived threads and timers outside any span; give each unit of work its own context",
        steps=(
            "A thread (with ThreadingInstrumentor) or a contextvars.copy_context() taken inside a request keeps "
            "that request's span for its whole life: start background threads, timers and pools at start-up, or "
            "under token = opentelemetry.context.attach(opentelemetry.context.Context()) ... detach(token).",
            "Per job, start the span from the job's own context: tracer.start_as_current_span(name, "
            "context=opentelemetry.propagate.extract(job.carrier)), or context=Context() for a new root.",
            "asyncio: create_task() copies the current context into the task for good: create long-lived tasks "
            "with loop.create_task(coro, context=contextvars.Context()) and pass each message its context. A "
            "connection or pool that keeps a contextvars.copy_context() from its creation must take one per call.",
        ),
        apis=(
            "opentelemetry.context.attach(Context())",
            "tracer.start_as_current_span(name, context=ctx)",
            "opentelemetry.propagate.extract(carrier)",
        ),
        snippet=(
            "from opentelemetry import context, propagate\n"
            "token = context.attach(context.Context())  # start the consumer from an empty context\n"
            "try:\n"
            "    threading.Thread(target=consume, daemon=True).start()\n"
            "finally:\n"
            "    context.detach(token)\n"
            "# per job\n"
            "with tracer.start_as_current_span('process_job', context=propagate.extract(job.carrier)):\n"
            "    ..."
        ),
    ),
}
_LEAK_GENERIC = Fix(
    title="Capture the context per task, not when the executor, timer or listener is created",
    steps=(
        "Java: wrap the executor with Context.taskWrapping(executor) (captures the context at each submit), not "
        "Context.current().wrap(executor) at construction, which pins every task to the creator's span.",
        ".NET: create timers and long-lived tasks inside using (ExecutionContext.SuppressFlow()) { ... } so they "
        "do not inherit the creating request's Activity.",
        "Any runtime: carry the context with each message and make it current in the handler for that message only.",
    ),
    apis=("Context.taskWrapping(executor)", "ExecutionContext.SuppressFlow()"),
)


def leak_fix(language: str | None) -> Fix:
    return _LEAK.get(language or "", _LEAK_GENERIC)


# -- silent workers: a worker that never exports ---------------------------------------------------
_SILENT = {
    "python": Fix(
        title="Initialise the SDK in every worker process (after the fork) and flush before it exits",
        steps=(
            "A TracerProvider built before the fork (gunicorn --preload, uWSGI, Celery prefork, multiprocessing) "
            "is not the worker's own: older SDKs do not restart the batch processor's thread in the child, and a "
            "worker leaving through os._exit() (or killed) never flushes the inherited batch. Build it in the worker.",
            "gunicorn: def post_fork(server, worker): init_tracing() in gunicorn.conf.py; uWSGI: "
            "@uwsgidecorators.postfork; Celery: @worker_process_init.connect; multiprocessing: "
            "Pool(initializer=init_tracing); plain os.fork: os.register_at_fork(after_in_child=init_tracing).",
            "Before a worker exits, trace.get_tracer_provider().force_flush() (or shutdown()): os._exit(), "
            "pool.terminate() and killed workers skip atexit.",
        ),
        apis=(
            "post_fork(server, worker)",
            "uwsgidecorators.postfork",
            "os.register_at_fork(after_in_child=...)",
            "celery.signals.worker_process_init",
            "TracerProvider.force_flush()",
        ),
        snippet=(
            "# gunicorn.conf.py\n"
            "def post_fork(server, worker):\n"
            "    from myapp.telemetry import init_tracing\n"
            "    init_tracing()\n"
            "# multiprocessing\n"
            "pool = multiprocessing.Pool(initializer=init_tracing)\n"
            "# before a worker exits\n"
            "trace.get_tracer_provider().force_flush()"
        ),
    ),
    "nodejs": Fix(
        title="Start an SDK in every worker thread and child process, and shut it down before it exits",
        steps=(
            "Each worker_threads Worker, piscina thread and child process has its own isolate: require your "
            "tracing set-up first thing in the worker file (or node --require ./tracing.js via execArgv / "
            "NODE_OPTIONS) so it runs NodeSDK.start().",
            "Await sdk.shutdown() before the worker or child exits; worker.terminate() and process.exit() drop "
            "the spans still in the batch.",
        ),
        apis=("NodeSDK.start() in the worker", "execArgv: ['--require', './tracing.js']", "await sdk.shutdown()"),
    ),
}
_SILENT_GENERIC = Fix(
    title="Initialise telemetry in every worker and flush it before the worker exits",
    steps=(
        "Each worker process (and each worker isolate) needs its own SDK and exporter, created after the fork; "
        "flush it (forceFlush / shutdown) before the worker exits.",
    ),
    apis=("TracerProvider.forceFlush()", "TracerProvider.shutdown()"),
)


def silent_fix(language: str | None) -> Fix:
    return _SILENT.get(language or "", _SILENT_GENERIC)


# -- silent processes: a process ``run`` saw live that exported nothing, by what it runs ------------
_AFTER_FORK = (
    "Build the TracerProvider in the worker, after the fork, not in the master: an SDK inherited across a fork "
    "is flushed only by atexit, which a forked worker leaving through os._exit() (or killed on a timeout) skips, "
    "so everything it recorded since its last scheduled export is lost."
)
_SILENT_PROCESS = {
    "gunicorn": Fix(
        title="gunicorn: initialise the SDK in each worker (post_fork) and flush it as the worker exits",
        steps=(
            _AFTER_FORK,
            "In gunicorn.conf.py: def post_fork(server, worker): init_tracing(); and def worker_exit(server, "
            "worker): trace.get_tracer_provider().shutdown(). Keep --preload only for the app, not the SDK.",
        ),
        apis=("post_fork(server, worker)", "worker_exit(server, worker)", "TracerProvider.shutdown()"),
        snippet=(
            "# gunicorn.conf.py\n"
            "def post_fork(server, worker):\n"
            "    from myapp.telemetry import init_tracing\n"
            "    init_tracing()\n\n"
            "def worker_exit(server, worker):\n"
            "    from opentelemetry import trace\n"
            "    trace.get_tracer_provider().shutdown()"
        ),
    ),
    "uwsgi": Fix(
        title="uWSGI: initialise the SDK in each worker (@postfork) and flush it at exit",
        steps=(
            _AFTER_FORK,
            "Decorate the set-up with @uwsgidecorators.postfork, run uWSGI with --enable-threads (the batch "
            "processor needs its thread) and register provider.shutdown with uwsgi.atexit.",
        ),
        apis=("uwsgidecorators.postfork", "--enable-threads", "uwsgi.atexit"),
        snippet=(
            "from uwsgidecorators import postfork\n\n"
            "@postfork\n"
            "def init_worker_tracing():\n"
            "    provider = init_tracing()\n"
            "    uwsgi.atexit = provider.shutdown"
        ),
    ),
    "celery": Fix(
        title="Celery prefork: initialise the SDK in each pool process and flush it as the process exits",
        steps=(
            _AFTER_FORK,
            "Connect the set-up to celery.signals.worker_process_init and the flush to "
            "celery.signals.worker_process_shutdown.",
        ),
        apis=("celery.signals.worker_process_init", "celery.signals.worker_process_shutdown"),
        snippet=(
            "from celery.signals import worker_process_init, worker_process_shutdown\n\n"
            "@worker_process_init.connect(weak=False)\n"
            "def init_worker_tracing(*args, **kwargs):\n"
            "    init_tracing()\n\n"
            "@worker_process_shutdown.connect(weak=False)\n"
            "def flush_worker_tracing(*args, **kwargs):\n"
            "    trace.get_tracer_provider().shutdown()"
        ),
    ),
    "python": Fix(
        title="Forked Python workers: initialise the SDK after the fork and flush it before the worker exits",
        steps=(
            _AFTER_FORK,
            "Plain os.fork: os.register_at_fork(after_in_child=init_tracing), and provider.shutdown() before "
            "os._exit(); multiprocessing: Pool(initializer=init_tracing) with a multiprocessing.util.Finalize "
            "that shuts it down, and close()/join() rather than terminate().",
        ),
        apis=(
            "os.register_at_fork(after_in_child=...)",
            "TracerProvider.shutdown() before os._exit()",
            "Pool(initializer=...)",
        ),
        snippet=(
            "os.register_at_fork(after_in_child=init_tracing)\n"
            "...\n"
            "# in the worker, before it leaves\n"
            "provider.shutdown()\n"
            "os._exit(0)"
        ),
    ),
    "nodejs": _SILENT["nodejs"],
}


def silent_process_fix(command: str) -> Fix:
    """The fix for a process that lived and exported nothing, for what its command line runs."""
    words = command.lower().replace("/", " ").split()
    for key in ("gunicorn", "uwsgi", "celery"):
        if any(w.startswith(key) for w in words):
            return _SILENT_PROCESS[key]
    if any(w in ("node", "npm", "npx") or w.endswith((".js", ".cjs", ".mjs")) for w in words):
        return _SILENT_PROCESS["nodejs"]
    if any(w.startswith("python") or w.endswith(".py") for w in words):
        return _SILENT_PROCESS["python"]
    return _SILENT_GENERIC
