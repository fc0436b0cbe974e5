"""Where CPU-codec tasks run: loky worker processes on this machine, or a Dask cluster.

A task is all rate points of one codec on one image (``worker.run_cpu_task``). Both
backends yield each task's records as it finishes; records are stored durably either by
the worker itself (loky: same machine) or by this process as results arrive (Dask:
workers need the images, and the run directory only for --save-bitstreams/--save-decoded,
both at the same absolute path as here).
"""
from __future__ import annotations

import os
from dataclasses import replace
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
    if scheduler and backend != "dask":
        raise ValueError(f"a Dask scheduler ({scheduler}) was given with backend {backend!r}: the scheduler is "
                         "used only with --backend dask (add it, or drop --scheduler to run here)")
    if backend == "dask":
        # Dask workers have their own working directory (and, on a cluster, their own machine): a
        # relative run directory or image path named some other folder there (saved bitstreams and
        # decoded images went there, so every rerun redid them; relative datasets failed every job)
        run_dir = Path(os.path.abspath(run_dir))
        jobs = [replace(j, image=replace(j.image, path=Path(os.path.abspath(j.image.path)))) for j in jobs]
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
    so workers need the images (shared filesystem or mirrors) but not the run directory (except
    for the files of --save-bitstreams/--save-decoded).

    A task whose worker died (KilledWorker: a codec that segfaults or calls os._exit, or a task
    that only sat on a worker killed by another one) lost all its results, finished jobs
    included, and every job of it failed. Now it runs again, on a worker but in a child process
    of its own (``_run_isolated``), job by job: the finished ones are kept, the job that kills
    the process fails saying so, the later ones of that codec on that image fail as not run
    (as with loky), and a task that was merely killed alongside comes back complete."""
    try:
        import dask
        from distributed import CancelledError, Client, KilledWorker, LocalCluster, as_completed
    except ImportError as exc:
        raise ImportError("--backend dask needs dask.distributed: pip install 'lcbench[dask]'") from exc
    cluster = None
    if scheduler:
        client = Client(scheduler, timeout="30s")
        where = scheduler
    else:
        # a crash fails its task at once (then re-run in isolation) instead of killing 3 more workers
        with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
            cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                   dashboard_address=":0")  # a free port: 8787 may be taken (a warning each time)
        client = Client(cluster)
        where = f"{cluster.scheduler_address} (the local cluster)"
    writer = store.writer_for(run_dir)
    lost = ""  # set once the scheduler is gone: nothing more can run
    try:
        plugins = loaded_plugins()
        futures: dict[Any, tuple[tuple, int]] = {}  # future -> (task args, isolated attempts so far)

        def submit(a: tuple, isolated: int) -> Any:
            fn = _run_isolated if isolated else run_cpu_task
            fut = client.submit(fn, *a[:6], write_records=False, plugins=plugins, pure=False)
            futures[fut] = (a, isolated)
            return fut

        pending = as_completed([submit(a, 0) for a in args])
        for fut in pending:
            a, isolated = futures.pop(fut)
            try:
                records = fut.result()
            except KilledWorker:
                if client.status not in ("running", "connecting"):
                    lost = lost or f"not run: lost the connection to the Dask scheduler {where}; rerun to resume"
                if not lost and isolated < _ISOLATED_TRIES:
                    pending.add(submit(a, isolated + 1))  # its jobs are stored when that comes back
                    continue
                records = _failed(a, lost or (
                    f"not run: the Dask worker holding this task died, {_ISOLATED_TRIES + 1} times over (the last "
                    f"{_ISOLATED_TRIES} while its jobs ran in a child process of their own, so not from a crash in "
                    f"this codec); rerun to resume"))
            except CancelledError as exc:
                # one text for every job (no task key, no job): the summary groups them in one line
                reason = getattr(exc, "reason", "") or ""
                if reason == "scheduler-connection-lost" or client.status != "running":
                    lost = lost or f"not run: lost the connection to the Dask scheduler {where}; rerun to resume"
                    why = lost
                else:
                    why = f"not run: the Dask scheduler {where} cancelled this task ({reason}); rerun to resume"
                records = _failed(a, why)
            except Exception as exc:  # noqa: BLE001 - the task itself raised (jobs give records): its jobs fail
                records = _failed(a, exc)
            for rec in records:
                writer.append(rec)
            yield records
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


_ISOLATED_TRIES = 3  # a task running in its own child process whose worker still dies: tried this often


def _failed(a: tuple, why: BaseException | str) -> list[dict[str, Any]]:
    """Records of a task's jobs, all failed: an exception is told per job (``error_text``), a text
    as it is (the same for every job, and for every task)."""
    records = []
    for job in a[3]:
        rec = base_record(job, a[1])
        rec["error"] = why if isinstance(why, str) else error_text(job, why)
        records.append(rec)
    return records


def _run_isolated(run_dir: str, dataset: str, device: str, jobs: list[Job], save_bitstreams: bool = False,
                  save_decoded: bool = False, write_records: bool = False,
                  plugins: tuple[tuple[str, str], ...] = ()) -> list[dict[str, Any]]:
    """``run_cpu_task`` in a child process of this (Dask worker) process, each job's record sent
    back as it finishes: a job that kills the child (segfault, os._exit) fails saying so, the
    jobs after it fail as not run, the ones before it keep their results, and the worker lives.
    (A subprocess, not multiprocessing/loky: Dask worker processes are daemonic.)"""
    import pickle
    import signal
    import subprocess
    import sys

    assert not write_records, "the Dask client stores the records"
    package_parent = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
    child = subprocess.Popen([sys.executable, "-c", "from lcbench.backends import _isolated_child; _isolated_child()"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(pickle.dumps((run_dir, dataset, device, jobs, save_bitstreams, save_decoded, plugins)))
    child.stdin.close()
    records: list[dict[str, Any]] = []
    raised: BaseException | None = None
    while True:
        try:
            kind, value = pickle.load(child.stdout)
        except EOFError:
            break
        except Exception:  # noqa: BLE001 - a record cut short by the child's death
            break
        if kind == "record":
            records.append(value)
        else:
            raised = value
    child.stdout.close()
    code = child.wait()
    if len(records) == len(jobs):
        return records
    if raised is not None:  # run_cpu_task raised outside any job (as it would have in the worker itself)
        return records + _failed(("", dataset, "", jobs[len(records):]), raised)
    import socket

    how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
    crashed = jobs[len(records)]
    rec = base_record(crashed, dataset)
    rec["error"] = error_text(crashed, RuntimeError(
        f"the worker process died (a crash in the codec, e.g. a segfault) while running this job "
        f"({how}; run alone in a child process of Dask worker {socket.gethostname()})"))
    later = _failed(("", dataset, "", jobs[len(records) + 1:]), RuntimeError(
        f"not run: the worker process died while running an earlier job of this codec on this image "
        f"({crashed.rate_param}={crashed.quality:g})"))
    return records + [rec] + later


def _isolated_child() -> None:
    """The child process of ``_run_isolated``: reads the task from stdin, writes ("record", rec)
    per finished job to the original stdout (the codec's own prints go to stderr)."""
    import pickle
    import sys

    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    run_dir, dataset, device, jobs, save_bitstreams, save_decoded, plugins = pickle.load(sys.stdin.buffer)
    for job in jobs:
        try:
            rec = run_cpu_task(run_dir, dataset, device, [job], save_bitstreams, save_decoded,
                               write_records=False, plugins=plugins)[0]
        except Exception as exc:  # noqa: BLE001 - sent back as the task's exception
            try:
                message = pickle.dumps(("raised", exc))
            except Exception:  # noqa: BLE001
                message = pickle.dumps(("raised", RuntimeError(f"{type(exc).__name__}: {exc}")))
            out.write(message)
            out.flush()
            return
        out.write(pickle.dumps(("record", rec)))
        out.flush()
