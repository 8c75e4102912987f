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
