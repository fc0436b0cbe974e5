"""Where CPU-codec tasks run: loky worker processes on this machine, or a Dask cluster.

A task is all rate points of one codec on one image (``worker.run_cpu_task``). Both
backends yield each task's records as it finishes; records are stored durably either by
the worker itself (loky: same machine) or by this process as results arrive (Dask:
workers need the images, not the run directory).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

from . import store
from .jobs import Job
from .registry import loaded_plugins
from .worker import base_record, error_text, run_cpu_task


def _n_workers(jobs: int | None) -> int:
    n = os.cpu_count() or 1
    if jobs is None or jobs == 0:
        return n
    return max(1, n + 1 + jobs) if jobs < 0 else jobs


def run_cpu_jobs(run_dir: Path, dataset: str, device: str, jobs: list[Job], *, n_jobs: int | None = None,
                 backend: str = "loky", scheduler: str | None = None, save_bitstreams: bool = False,
                 save_decoded: bool = False) -> Iterator[list[dict[str, Any]]]:
    """Yield each task's records as it finishes; tasks are (image, codec) groups, image-major."""
    tasks: dict[tuple[str, str], list[Job]] = {}
    for job in sorted(jobs, key=lambda j: j.image.id):  # stable: codec order kept within an image
        tasks.setdefault((job.image.id, job.spec), []).append(job)
    args = [(str(run_dir), dataset, device, group, save_bitstreams, save_decoded)
            for group in tasks.values()]
    n = min(_n_workers(n_jobs), max(1, len(args)))
    if backend == "dask":
        yield from _run_dask(run_dir, args, scheduler, n)
        return
    if backend != "loky":
        raise ValueError(f"unknown --backend {backend!r}: use loky or dask")
    if n == 1:
        for a in args:
            yield run_cpu_task(*a)
        return
    yield from _run_loky(run_dir, args, n)


def _indexed_task(i: int, a: tuple, plugins: tuple) -> tuple[int, list[dict[str, Any]]]:
    return i, run_cpu_task(*a, plugins=plugins)


def _run_loky(run_dir: Path, args: list[tuple], n: int) -> Iterator[list[dict[str, Any]]]:
    """Tasks on n loky worker processes. A task that kills its process (a codec that segfaults
    or calls os._exit) broke the whole pool, so the run stopped and stopped again on every
    rerun. Now the unfinished tasks are run one by one in a fresh process, earliest first (the
    ones that were running), until the one that kills its process is found: its unfinished jobs
    fail with that reason, and the rest go back to the pool."""
    from joblib import Parallel, delayed
    from joblib.externals.loky.process_executor import TerminatedWorkerError

    plugins = loaded_plugins()  # workers are fresh processes: they load the same plugin code
    remaining = list(args)
    while remaining:
        finished: set[int] = set()
        try:
            parallel = Parallel(n_jobs=n, return_as="generator_unordered", backend="loky", batch_size=1)
            for i, records in parallel(delayed(_indexed_task)(i, a, plugins) for i, a in enumerate(remaining)):
                finished.add(i)
                yield records
            return
        except TerminatedWorkerError:
            remaining = [a for i, a in enumerate(remaining) if i not in finished]
        # the tasks that were running are the earliest unfinished ones (tasks start in order)
        for _ in range(min(len(remaining), 2 * n + 2)):
            a = remaining.pop(0)
            records, died = _run_alone(run_dir, a, plugins)
            yield records
            if died:
                break


def _exit_codes(exc: BaseException) -> str:
    """loky's long message, down to what matters: the worker's exit code or signal."""
    import re

    m = re.search(r"exit codes of the workers are (\{[^}]*\})", str(exc))
    return f"worker exit codes {m.group(1)}" if m else str(exc).splitlines()[0]


def _run_alone(run_dir: Path, a: tuple, plugins: tuple) -> tuple[list[dict[str, Any]], bool]:
    """One task in a fresh one-worker process: (its records, whether it killed the process)."""
    from joblib.externals.loky import get_reusable_executor
    from joblib.externals.loky.process_executor import TerminatedWorkerError

    executor = get_reusable_executor(max_workers=1)
    try:
        return executor.submit(run_cpu_task, *a, plugins=plugins).result(), False
    except TerminatedWorkerError as exc:
        jobs, dataset = a[3], a[1]
        done = {r.get("key") for r in store.read_records(run_dir) if not r.get("error")}
        writer = store.writer_for(run_dir)
        records = []
        for job in jobs:
            if job.key in done:
                continue  # finished (and stored by the worker) before the process died
            rec = base_record(job, dataset)
            rec["error"] = error_text(job, RuntimeError(
                f"the worker process died (a crash in the codec, e.g. a segfault) while running this "
                f"job or an earlier one of this codec on this image ({_exit_codes(exc)})"))
            writer.append(rec)
            records.append(rec)
        return records, True
    except BaseException:
        executor.shutdown(wait=False, kill_workers=True)
        raise


def _run_dask(run_dir: Path, args: list[tuple], scheduler: str | None, n_workers: int
              ) -> Iterator[list[dict[str, Any]]]:
    """The same tasks on a Dask cluster; this process stores each task's records as it arrives,
    so workers need the images (shared filesystem or mirrors) but not the run directory."""
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError as exc:
        raise ImportError("--backend dask needs dask.distributed: pip install 'lcbench[dask]'") from exc
    cluster = None
    if scheduler:
        client = Client(scheduler, timeout="30s")
    else:
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=None)
        client = Client(cluster)
    writer = store.writer_for(run_dir)
    try:
        plugins = loaded_plugins()
        futures = {client.submit(run_cpu_task, *a[:6], write_records=False, plugins=plugins, pure=False): a
                   for a in args}
        for fut in as_completed(futures):
            try:
                records = fut.result()
            except Exception as exc:  # the task itself died (worker lost, ...): its jobs fail, others go on
                a = futures[fut]
                records = []
                for job in a[3]:
                    rec = base_record(job, a[1])
                    rec["error"] = error_text(job, exc)
                    records.append(rec)
            for rec in records:
                writer.append(rec)
            yield records
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
