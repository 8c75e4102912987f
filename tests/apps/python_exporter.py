"""A Python app for the receiver's end-to-end tests, run as its own process.

It picks the real OTLP exporter from the standard environment (``OTEL_EXPORTER_OTLP_PROTOCOL``,
``_ENDPOINT``, ``_COMPRESSION``), as a user's app pointed at ``ctxdoctor listen`` would. For each
of CTXDOCTOR_ROUNDS incoming "requests" it hands tasks to a thread pool without passing context
(each task's span becomes an orphan root), and appends every span id it created to
``CTXDOCTOR_IDS`` so the test can check nothing was lost or written twice. Each request's id is on
its span and on its tasks' spans, as apps often carry it: the gap is then found from that id
whatever the timing on a loaded test machine (timing alone is tested on recorded dumps).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor


def exporter():  # type: ignore[no-untyped-def]
    if os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    return OTLPSpanExporter()


def main() -> int:
    rounds = int(os.environ.get("CTXDOCTOR_ROUNDS", "3"))
    tasks = int(os.environ.get("CTXDOCTOR_TASKS", "4"))
    per_task = int(os.environ.get("CTXDOCTOR_SPANS_PER_TASK", "10"))
    provider = TracerProvider(
        resource=Resource.create(
            {
                "service.name": os.environ.get("CTXDOCTOR_SERVICE", "receiver-test-python"),
                "process.pid": os.getpid(),
            }
        )
    )
    provider.add_span_processor(
        BatchSpanProcessor(exporter(), schedule_delay_millis=100, max_export_batch_size=256)
    )
    tracer = provider.get_tracer("receiver-test")
    ids: list[str] = []
    lock = threading.Lock()

    def record(span: trace.Span) -> None:
        ctx = span.get_span_context()
        with lock:
            ids.append(f"{ctx.trace_id:032x} {ctx.span_id:016x}\n")

    def task(i: int, request_id: str) -> None:
        # Runs on a pool thread: the dispatcher's context is not here, so this is a new root.
        attrs = {"task.index": i, "ratio": 0.5, "request.id": request_id}
        with tracer.start_as_current_span("task", attributes=attrs) as root:
            record(root)
            for j in range(per_task - 1):
                with tracer.start_as_current_span("step", attributes={"step": j, "ok": True}) as child:
                    child.add_event("tick", {"n": j})
                    record(child)

    with ThreadPoolExecutor(max_workers=4) as pool:
        for r in range(rounds):
            request_id = f"req-{os.getpid()}-{r}"
            attrs = {"request.id": request_id}
            with tracer.start_as_current_span("dispatch", kind=trace.SpanKind.SERVER, attributes=attrs) as dispatch:
                record(dispatch)
                list(pool.map(task, range(tasks), [request_id] * tasks))
            time.sleep(0.005)  # idle time between requests
    ok = provider.force_flush(30_000)
    provider.shutdown()
    with open(os.environ["CTXDOCTOR_IDS"], "a") as f:
        f.write("".join(ids))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
