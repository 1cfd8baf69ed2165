"""A loaded model version: its session, its served signature and the way requests reach it."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import gc
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from kiln.repository.autocomplete import served_signature
from kiln.repository.config import DynamicBatchingConfig, ModelConfig
from kiln.repository.layout import ModelSource
from kiln.runtime import Backend, Session, SessionOptions
from kiln.serve.core.batching import BatchingPolicy, DynamicBatcher, RunTimes
from kiln.serve.core.statistics import ModelStats, Timing
from kiln.serve.core.warmup import warm_up
from kiln.tensors import Signature, TensorDict

log = logging.getLogger("kiln.serve.core.model")


class ModelVersion:
    """One version of one model, loaded and ready to run.

    Runs happen on a thread pool of ``instances.count`` threads sharing one session, so that
    many executions proceed at once while the event loop stays free.
    """

    def __init__(self, *, name: str, version: int, config: ModelConfig, backend: Backend,
                 session: Session, signature: Signature, run_times: RunTimes | None = None,
                 options: SessionOptions | None = None, histograms: bool = False,
                 load_s: float = 0.0) -> None:
        self.name = name
        self.version = version
        self.config = config
        self.backend = backend
        self.session = session
        self.signature = signature
        #: The runtime settings the session was made with (None: not known).
        self.options = options
        #: How long loading (and warming up) took, in seconds.
        self.load_s = load_s
        self._executor = ThreadPoolExecutor(
            max_workers=config.instances.count, thread_name_prefix=f"kiln-{name}-{version}",
            initializer=_yield_to_event_loop,
        )
        self.batcher = DynamicBatcher(f"{name}", session.run, self._executor,
                                      batching_policy(config, signature, run_times,
                                                      on_cpu=computes_on_cpu(session)),
                                      stats=ModelStats.create(histograms=histograms))

    @classmethod
    def load(cls, source: ModelSource, version: int, *, backend: Backend,
             histograms: bool = False) -> ModelVersion:
        """Admit and load ``source``'s ``version`` with ``backend``, then warm it up; raises
        with the reason when it cannot. ``histograms``: keep the distributions the
        Prometheus exporter reports."""
        config = source.config
        filename = config.default_model_filename or backend.default_filename
        started = time.perf_counter()
        options = session_options(config)
        artifact = backend.admit(source.files(version), filename, options)
        session = backend.load(artifact, options)
        signature = served_signature(source.name, config, session.signature)
        run_times = warm_up(source.name, session, signature, config.warmup)
        if options.allow_spinning and config.optimization.allow_spinning is None and \
                options.intra_op_threads > 1 and computes_on_cpu(session) and \
                runs_inline(config, signature, run_times):
            # NOTE: intra-op threads spinning beside a model run on the event loop take the
            # cores the loop and its clients need; such a model is small, so load it again.
            session.close()
            options = dataclasses.replace(options, allow_spinning=False)
            session = backend.load(artifact, options)
            run_times = warm_up(source.name, session, signature, config.warmup)
        load_s = time.perf_counter() - started
        log.info("model loaded", extra={"fields": {
            "model": source.name, "version": str(version), "load_ms": round(load_s * 1e3, 1),
            "providers": ",".join(session.providers), "intra_op_threads": options.intra_op_threads,
            "spinning": options.allow_spinning}})
        return cls(name=source.name, version=version, config=config, backend=backend,
                   session=session, signature=signature, run_times=run_times, options=options,
                   histograms=histograms, load_s=load_s)

    @property
    def stats(self) -> ModelStats:
        """This version's statistics (Triton's statistics extension)."""
        return self.batcher.stats

    async def infer(self, inputs: TensorDict, *, rows: int, outputs: Sequence[str] | None,
                    priority: int = 0, timeout_us: int | None = None,
                    timing: Timing | None = None) -> TensorDict:
        """Queue the request on the model's batcher; the event loop never blocks on the model."""
        return await self.batcher.submit(inputs, rows=rows, outputs=outputs, priority=priority,
                                         timeout_us=timeout_us, timing=timing)

    async def drain(self, timeout_s: float) -> bool:
        """Wait until no request is queued or running, at most ``timeout_s``; True when idle.

        NOTE: the registry stops handing this version out before draining it, and a request
        goes from ``registry.get`` into the queue without yielding, so none arrives later.
        """
        deadline = time.monotonic() + timeout_s
        while self.batcher.queue_depth or self.batcher.busy:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    async def close(self) -> None:
        """Fail whatever still waits (after a drain: nothing), then free the session."""
        self.batcher.close()
        await asyncio.to_thread(self._release)

    def _release(self) -> None:
        self._executor.shutdown(wait=True)
        self.session.close()
        release_heap()


def release_heap() -> None:
    """Give freed memory back to the OS. NOTE: glibc keeps the freed heap of a closed session
    in the process (RSS would not drop after an unload) until ``malloc_trim`` is called."""
    gc.collect()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)


def session_options(config: ModelConfig) -> SessionOptions:
    """Thread counts chosen so that the instances together use the cores without oversubscribing."""
    opt = config.optimization
    cores = os.cpu_count() or 1
    intra = opt.intra_op_threads
    if intra is None:
        intra = max(1, cores // config.instances.count)
    providers: list[str] = list(opt.execution_providers or [])
    if not providers and config.instances.kind == "gpu":
        providers = ["CUDAExecutionProvider"]
    wanted = tuple(providers) or ("CPUExecutionProvider",)
    return SessionOptions(
        intra_op_threads=intra,
        inter_op_threads=opt.inter_op_threads if opt.inter_op_threads is not None else 1,
        graph_optimization=opt.graph_optimization,
        execution_providers=wanted,
        # NOTE: ONNX Runtime's default, spinning, measured faster for models computed on the
        # instance threads (MiniLM at c=1 and c=16); ``load`` turns it off for inline ones,
        # and a GPU model's CPU threads only run the odd fallback node, so they do not spin.
        allow_spinning=opt.allow_spinning if opt.allow_spinning is not None
        else "CPU" in wanted[0],
    )


#: Niceness added to the threads that run models: when model and event loop share a core,
#: the loop (reading requests, refusing them when the queue is full) goes first.
MODEL_THREAD_NICENESS = 5


def _yield_to_event_loop() -> None:
    with contextlib.suppress(OSError, AttributeError):  # Linux: niceness is per thread
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), MODEL_THREAD_NICENESS)


#: The default time bound of a queue is never shorter: for fast models, timing noise would
#: otherwise refuse requests that the count bound lets in.
MIN_DEFAULT_QUEUE_WAIT_US = 50_000


def batching_policy(config: ModelConfig, signature: Signature,
                    run_times: RunTimes | None = None, *, on_cpu: bool = True) -> BatchingPolicy:
    """Dynamic batching is on for models with a batch dimension unless the config says no.

    ``run_times`` (from warm-up) set the default time bound of the queue and whether the
    model is fast enough to run on the event loop (``optimization.inline_max_us``; only
    models computed ``on_cpu``: a GPU run waits for the device, which the loop should not)."""
    dyn = config.dynamic_batching or DynamicBatchingConfig()
    max_batch = signature.max_batch_size if dyn.enabled else 0
    instances = config.instances.count
    queue = dyn.max_queue_size or max(64, 2 * max(max_batch, 1) * instances)
    wait_us = dyn.max_queue_wait_us
    if wait_us is None:  # what ``queue`` one-row requests take at warm-up speed
        rows = max(max_batch, 1)
        wait_us = 0 if run_times is None else max(round(
            (-(-queue // rows) * run_times.fixed_ns + queue * run_times.row_ns)
            / instances / 1e3), MIN_DEFAULT_QUEUE_WAIT_US)
    return BatchingPolicy(
        max_batch_size=max_batch,
        max_queue_delay_us=dyn.max_queue_delay_us,
        preferred_batch_sizes=tuple(dyn.preferred_batch_sizes),
        max_queue_size=queue,
        max_queue_wait_us=wait_us,
        run_times=run_times,
        default_timeout_us=dyn.default_timeout_us,
        priority_levels=dyn.priority_levels,
        default_priority_level=dyn.default_priority_level,
        instances=instances,
        inline=on_cpu and runs_inline(config, signature, run_times),
    )


def computes_on_cpu(session: Session) -> bool:
    """Whether the session's preferred provider is a CPU one."""
    providers = session.providers
    return not providers or "CPU" in providers[0]


def runs_inline(config: ModelConfig, signature: Signature, run_times: RunTimes | None) -> bool:
    """Whether the model's largest batch ran at warm-up in under ``inline_max_us``."""
    if run_times is None:
        return False
    largest_us = run_times.batch_ns(max(signature.max_batch_size, 1)) / 1e3
    return largest_us < config.optimization.inline_max_us
