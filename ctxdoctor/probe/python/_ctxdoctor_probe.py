"""The Python side of ``ctxdoctor run``'s probe: plain facts about where work changes thread or process.

Loaded by the ``sitecustomize`` next to this file, in every Python process the command starts
(it runs on the command's own interpreter, 3.10 or later, so it uses the standard library only
and never imports ctxdoctor). It appends one JSON object per line to ``$CTXDOCTOR_PROBE_FACTS``:

* ``proc``: this process started (pid, parent pid, command line).
* ``dispatch``: work handed to another thread or process (``Thread.start``,
  ``ThreadPoolExecutor.submit`` and so ``loop.run_in_executor`` / ``asyncio.to_thread``,
  ``multiprocessing`` ``Process.start`` and ``Pool`` task submission, ``os.fork``), with the span
  active there, whether a carrier went along, and the first frame of the app's own code.
* ``start``: a span started in this thread or process, tied to the dispatch it runs under. Only
  the first span of each dispatch and every root span are noted: that is what ties an orphan to
  the line that dropped its context.
* ``sdk``: a ``TracerProvider`` exists in this process.

What it never does: change a span, an attribute, a header or the app's output. The tasks it
tracks are run through a thin callable that calls the app's own with the same arguments and
returns its result. Anything it cannot do is skipped (one line on stderr under
``CTXDOCTOR_PROBE_VERBOSE=1``).
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import json
import os
import sys
import threading
import time
import weakref
from typing import Any

_PATH = os.environ.get("CTXDOCTOR_PROBE_FACTS", "")
_VERBOSE = os.environ.get("CTXDOCTOR_PROBE_VERBOSE") == "1"
_HERE = os.path.dirname(os.path.abspath(__file__))
#: Frames in these folders are the runtime, a library or the probe: never "the app's line".
_STDLIB = os.path.dirname(os.__file__) + os.sep
_NOT_APP = (_STDLIB, _HERE + os.sep)
_LIB_HINTS = (os.sep + "site-packages" + os.sep, os.sep + "dist-packages" + os.sep)

_fd = -1
_fd_pid = -1
_counter = itertools.count(1)
_local = threading.local()
#: Thread object -> the dispatch that started it (weak: threads come and go).
_thread_dispatch: weakref.WeakKeyDictionary[threading.Thread, str] = weakref.WeakKeyDictionary()
#: The dispatch this whole process runs under (a fork or a multiprocessing child), if any.
_process_dispatch: str | None = None
_seen_dispatch: set[tuple[str, int]] = set()
_said: set[str] = set()


def _skip(what: str, exc: BaseException) -> None:
    if _VERBOSE and what not in _said:
        _said.add(what)
        with contextlib.suppress(Exception):
            sys.stderr.write(f"ctxdoctor probe: skipped {what}: {exc!r}\n")


#: One encoder, reused: ``json.dumps`` builds a new one per call when given separators.
_json = json.JSONEncoder(separators=(",", ":"), check_circular=False)


#: JSON for a string, in C where the interpreter has it.
_str = json.encoder.encode_basestring


def _emit(rec: dict[str, Any]) -> None:
    rec["pid"] = os.getpid()
    rec["rt"] = "python"
    try:
        _write(_json.encode(rec) + "\n")
    except Exception as exc:
        _skip("writing facts", exc)


def _write(line: str) -> None:
    """One ``os.write`` on an ``O_APPEND`` descriptor per fact: whole lines, even across processes,
    and each on disk as soon as it is known, so a process killed or leaving through ``os._exit``
    loses none (buffering would save the system call, 1.5-2 µs a fact, and lose exactly those)."""
    global _fd, _fd_pid
    pid = os.getpid()
    try:
        if _fd < 0 or _fd_pid != pid:
            _fd = os.open(_PATH, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
            _fd_pid = pid
        os.write(_fd, line.encode())
    except Exception as exc:
        _skip("writing facts", exc)


def _now() -> int:
    return time.time_ns()


def _site(depth: int) -> tuple[str, str]:
    """The first frame of the app's own code above the probe, as JSON (``null`` if none), and the
    last runtime function before it."""
    try:
        f: Any = sys._getframe(depth)
    except ValueError:
        return "null", ""
    api = ""
    lib0, lib1 = _LIB_HINTS
    while f is not None:
        code = f.f_code
        path = code.co_filename
        if not path.startswith(_NOT_APP) and lib0 not in path and lib1 not in path and not path.startswith("<"):
            return _site_json(f), api
        if path.startswith(_STDLIB):
            api = code.co_name + ("@mp" if "multiprocessing" in path else "")
        f = f.f_back
    return "null", api


#: (code, instruction) -> the site's JSON: a dispatch site is usually hit many times.
_sites: dict[tuple[Any, int], str] = {}


def _site_json(f: Any) -> str:
    key = (f.f_code, f.f_lasti)
    text = _sites.get(key)
    if text is None:
        text = _json.encode(
            {"file": f.f_code.co_filename, "line": f.f_lineno, "column": _column(f), "function": f.f_code.co_name}
        )
        if len(_sites) < 4096:
            _sites[key] = text
    return text


_columns: dict[tuple[Any, int], int | None] = {}


def _column(f: Any) -> int | None:
    """The 1-based column of the call (Python 3.11+), cached per instruction: a dispatch site
    is usually hit many times, and finding the position walks the code object's table."""
    key = (f.f_code, f.f_lasti)
    if key in _columns:
        return _columns[key]
    col = None
    positions = getattr(f.f_code, "co_positions", None)
    if positions is not None:
        try:
            pos = next(itertools.islice(positions(), f.f_lasti // 2, None))
            col = pos[2] + 1 if pos[2] is not None else None
        except Exception:
            col = None
    if len(_columns) < 4096:
        _columns[key] = col
    return col


def _active() -> str:
    """The span active here as JSON (``null`` if none), read from the app's own OpenTelemetry API
    if it loaded one."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return "null"
    global _last_span
    try:
        span = trace.get_current_span()
        last = _last_span  # one tuple, so another thread never sees a span with the wrong text
        if span is last[0]:  # dispatches in a row under one span: format it once
            return last[1]
        ctx = span.get_span_context()
        text = f'{{"trace":"{ctx.trace_id:032x}","span":"{ctx.span_id:016x}"}}' if ctx.is_valid else "null"
        _last_span = (span, text)
        return text
    except Exception as exc:
        _skip("reading the active span", exc)
        return "null"


_last_span: tuple[Any, str] = (None, "null")


def _has_carrier(values: Any) -> bool:
    """A W3C carrier among the arguments (one level into dicts, lists and tuples), or a copied context."""
    try:
        for v in values:
            if isinstance(v, dict) and (
                "traceparent" in v or any(isinstance(x, dict) and "traceparent" in x for x in v.values())
            ):
                return True
            if isinstance(v, (list, tuple)) and _has_carrier(v):
                return True
            if isinstance(v, contextvars.Context):
                return True
            if getattr(v, "__self__", None).__class__ is contextvars.Context:  # copy_context().run
                return True
            if getattr(v, "func", None) is not None and _has_carrier((v.func, *v.args)):  # functools.partial
                return True
    except Exception:
        return False
    return False


def _dispatch(api: str, default_api: str, args: Any, **extra: Any) -> str:
    """Note one dispatch; ``api`` empty means: name it after the runtime function the app called."""
    ident, head = _dispatch_record(api, default_api, args)
    _write(_line(head, extra))
    return ident


def _dispatch_record(api: str, default_api: str, args: Any) -> tuple[str, str]:
    """The dispatch fact's id and its JSON up to the fields a caller adds (the far end's id, once
    known) before writing it once with ``_line``. Built as text: a dispatch site is hit many times,
    and its JSON is cached (general encoding cost more than everything else the probe does)."""
    site, called = _site(1)  # the walk skips the probe's own frames
    pid = os.getpid()
    ident = f"{pid}-{next(_counter)}"
    name = _api_name(called, default_api) if api == "" else api
    head = (
        f'{{"ev":"dispatch","id":"{ident}","api":{_str(name)},"t":{_now()},"tid":{threading.get_ident()},'
        f'"span":{_active()},"carrier":{"true" if _has_carrier(args) else "false"},"site":{site}'
    )
    return ident, head


def _line(head: str, extra: dict[str, Any]) -> str:
    fields = ""
    for k, v in extra.items():
        fields += f',"{k}":{_value(v)}'
    return f'{head}{fields},"pid":{os.getpid()},"rt":"python"}}\n'


def _value(v: Any) -> str:
    if v is True:
        return "true"
    if v is False:
        return "false"
    if v is None:
        return "null"
    if type(v) is int:
        return str(v)
    return _json.encode(v)


def _api_name(called: str, default: str) -> str:
    """The public API the app called, from the last runtime function on the stack before its line."""
    if called == "to_thread":
        return "asyncio.to_thread"
    if called == "run_in_executor":
        return "loop.run_in_executor"
    if called == "map":
        return "ThreadPoolExecutor.map"
    if called.endswith("@mp"):
        return f"multiprocessing.Pool.{called[:-3]}"
    return default


def _called_by_app() -> bool:
    """Whether the app itself called the API (not a pool, the SDK or another library setting up)."""
    try:
        path = sys._getframe(2).f_code.co_filename
    except ValueError:
        return False
    return not path.startswith(_NOT_APP) and not any(h in path for h in _LIB_HINTS)


def _current_dispatch() -> str | None:
    task = getattr(_local, "task", None)
    if task is not None:
        return str(task)
    d = _thread_dispatch.get(threading.current_thread())
    if d is not None:
        return d
    if threading.current_thread() is threading.main_thread():
        return _process_dispatch
    return None


class _Task:
    """Runs the app's callable unchanged, noting which dispatch this thread or process now serves.

    A class at module level so multiprocessing can pickle it by reference; the child imports this
    module from ``PYTHONPATH`` exactly as it imports ``sitecustomize``.
    """

    __slots__ = ("dispatch", "fn")

    def __init__(self, fn: Any, dispatch: str) -> None:
        self.fn = fn
        self.dispatch = dispatch

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        previous = getattr(_local, "task", None)
        _local.task = self.dispatch
        try:
            return self.fn(*args, **kwargs)
        finally:
            _local.task = previous

    def __reduce__(self) -> Any:
        return (_Task, (self.fn, self.dispatch))


class _Processor:
    """A span processor that only reads: which thread and process each span started on."""

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        try:
            dispatch = _current_dispatch()
            parent = getattr(span, "parent", None)
            if parent is not None and (dispatch is None or (dispatch, threading.get_ident()) in _seen_dispatch):
                return
            if dispatch is not None:
                _seen_dispatch.add((dispatch, threading.get_ident()))
            ctx = span.get_span_context()
            _emit(
                {
                    "ev": "start",
                    "t": getattr(span, "start_time", None) or _now(),
                    "tid": threading.get_ident(),
                    "trace": f"{ctx.trace_id:032x}",
                    "span": f"{ctx.span_id:016x}",
                    "parent": f"{parent.span_id:016x}" if parent is not None else None,
                    "dispatch": dispatch,
                    "name": getattr(span, "name", ""),
                    "main": threading.current_thread() is threading.main_thread(),
                }
            )
        except Exception as exc:
            _skip("noting a span start", exc)

    def on_end(self, span: Any) -> None:
        pass

    def _on_ending(self, span: Any) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _patch_sdk(module: Any) -> None:
    provider_cls = getattr(module, "TracerProvider", None)
    if provider_cls is None or getattr(provider_cls, "_ctxdoctor_probe", False):
        return
    original = provider_cls.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        try:
            self.add_span_processor(_Processor())
            _emit({"ev": "sdk", "t": _now(), "tid": threading.get_ident()})
        except Exception as exc:
            _skip("adding the span processor", exc)

    __init__.__wrapped__ = original  # type: ignore[attr-defined]
    provider_cls.__init__ = __init__
    provider_cls._ctxdoctor_probe = True


class _SdkFinder:
    """Patches ``opentelemetry.sdk.trace`` right after the app imports it (never imports it itself)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "opentelemetry.sdk.trace":
            return None
        import importlib.machinery

        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return None
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_and_patch(module: Any) -> None:
            exec_module(module)
            try:
                _patch_sdk(module)
            except Exception as exc:
                _skip("patching the SDK", exc)

        try:
            loader.exec_module = exec_and_patch  # type: ignore[method-assign]
        except Exception as exc:
            _skip("hooking the SDK import", exc)
            return None
        return spec


def _wrap(cls: Any, name: str, make: Any) -> None:
    try:
        original = getattr(cls, name)
        if getattr(original, "_ctxdoctor_probe", False):
            return
        wrapper = make(original)
        wrapper._ctxdoctor_probe = True
        wrapper.__wrapped__ = original
        wrapper.__name__ = getattr(original, "__name__", name)
        wrapper.__doc__ = getattr(original, "__doc__", None)
        setattr(cls, name, wrapper)
    except Exception as exc:
        _skip(f"{getattr(cls, '__name__', cls)}.{name}", exc)


def _busy() -> bool:
    return bool(getattr(_local, "busy", False))


def _thread_start(original: Any) -> Any:
    def start(self: Any) -> Any:
        if _busy():
            return original(self)
        target = getattr(self, "_target", None)
        args = (target, *(getattr(self, "_args", ()) or ()), *((getattr(self, "_kwargs", None) or {}).values()))
        task = _called_by_app()
        ident, head = _dispatch_record("threading.Thread.start", "threading.Thread.start", args)
        _thread_dispatch[self] = ident
        try:
            return original(self)
        finally:
            _write(_line(head, {"task": task, "target_tid": self.ident}))

    return start


def _submit(original: Any) -> Any:
    def submit(self: Any, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        if _busy():
            return original(self, fn, *args, **kwargs)
        ident = _dispatch("", "ThreadPoolExecutor.submit", (fn, *args, *kwargs.values()))
        _local.busy = True
        try:
            return original(self, _Task(fn, ident), *args, **kwargs)
        finally:
            _local.busy = False

    return submit


def _pool_method(name: str) -> Any:
    def make(original: Any) -> Any:
        def method(self: Any, func: Any, *args: Any, **kwargs: Any) -> Any:
            if _busy():
                return original(self, func, *args, **kwargs)
            ident = _dispatch("", f"multiprocessing.Pool.{name}", (func, *args))
            _local.busy = True
            try:
                return original(self, _Task(func, ident), *args, **kwargs)
            finally:
                _local.busy = False

        return method

    return make


def _process_start(original: Any) -> Any:
    def start(self: Any) -> Any:
        if _busy():
            return original(self)
        target = getattr(self, "_target", None)
        args = (target, *getattr(self, "_args", ()))
        ident = _dispatch("multiprocessing.Process.start", "multiprocessing.Process.start", args, task=_called_by_app())
        _local.busy = True
        try:
            original(self)
        finally:
            _local.busy = False
        _emit({"ev": "target", "id": ident, "child_pid": self.pid, "t": _now()})
        _spawned_dispatch[self.pid] = ident

    return start


_spawned_dispatch: dict[int, str] = {}
_fork_dispatch: str | None = None


def _before_fork() -> None:
    global _fork_dispatch
    _fork_dispatch = None if _busy() else _dispatch("os.fork", "os.fork", ())


def _after_fork_parent() -> None:
    pass


def _after_fork_child() -> None:
    global _process_dispatch, _fd
    _fd = -1
    _seen_dispatch.clear()
    _local.busy = False
    inherited = getattr(_local, "task", None)
    _process_dispatch = _fork_dispatch or inherited
    _announce(fork_of=_fork_dispatch)


def _announce(**extra: Any) -> None:
    _emit(
        {
            "ev": "proc",
            "t": _now(),
            "ppid": os.getppid(),
            "argv": [os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv[:4])],
            "sdk": _has_provider(),
            **extra,
        }
    )


def _has_provider() -> bool:
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return False
    return getattr(trace, "_TRACER_PROVIDER", None) is not None


def _at_exit() -> None:
    _emit({"ev": "exit", "t": _now(), "sdk": _has_provider()})


def install() -> None:
    if not _PATH:
        return
    import atexit

    _announce()
    atexit.register(_at_exit)
    sys.meta_path.insert(0, _SdkFinder())
    sdk = sys.modules.get("opentelemetry.sdk.trace")
    if sdk is not None:
        _patch_sdk(sdk)
    _wrap(threading.Thread, "start", _thread_start)
    try:
        import concurrent.futures.thread as cft

        _wrap(cft.ThreadPoolExecutor, "submit", _submit)
    except Exception as exc:
        _skip("ThreadPoolExecutor", exc)
    try:
        import multiprocessing.pool as mpp
        import multiprocessing.process as mproc

        _wrap(mproc.BaseProcess, "start", _process_start)
        for name in ("apply_async", "_map_async", "imap", "imap_unordered"):
            _wrap(mpp.Pool, name, _pool_method(name.lstrip("_")))
    except Exception as exc:
        _skip("multiprocessing", exc)
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_parent, after_in_child=_after_fork_child)
