"""The run directory: one durable record per finished job, results.csv and run.json.

Each process appends finished jobs to its own shard ``records/<host>-<pid>-<id>.jsonl``
with a single ``write`` of one complete line per job, so a killed run loses at most the
job in flight; a torn last line is ignored on reading. ``results.csv`` is rebuilt from
the records, so it can never disagree with them.
"""
from __future__ import annotations

import errno
import json
import math
import os
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

RESULTS_CSV = "results.csv"
METADATA_JSON = "run.json"
RECORDS_DIR = "records"
FORMAT_VERSION = 1
# Record field with the write time (ns since the epoch); internal, not a results.csv column.
WRITTEN_NS = "_written_ns"

# The first columns of results.csv, in order; codec-specific extras follow.
COLUMNS = (
    "codec", "codec_version", "rate_param", "quality", "image", "width", "height", "bytes", "bpp",
    "psnr_rgb", "psnr_y", "mse_rgb", "mse_y", "ssim", "ms_ssim", "ms_ssim_db", "enc_time_s", "dec_time_s",
    "error", "notes", "dataset", "key",
)


INTEGER_COLUMNS = ("width", "height", "bytes")
NUMERIC_COLUMNS = ("quality", "bpp", "psnr_rgb", "psnr_y", "mse_rgb", "mse_y", "ssim",
                   "ms_ssim", "ms_ssim_db", "enc_time_s", "dec_time_s")


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if hasattr(value, "item"):  # numpy scalars
        return _jsonable(value.item())
    return value


def _from_json(value: Any) -> Any:
    if value == "inf":
        return math.inf
    if value == "-inf":
        return -math.inf
    return value


class RecordWriter:
    """Appends records to this process's shard; one os.write per record."""

    def __init__(self, run_dir: Path) -> None:
        records = Path(run_dir) / RECORDS_DIR
        records.mkdir(parents=True, exist_ok=True)
        name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        self.path = records / name
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def append(self, record: dict[str, Any]) -> None:
        # WRITTEN_NS orders records across shards: shard names (host-pid-id) sort in no time order
        stamped = {**record, WRITTEN_NS: time.time_ns()}
        line = json.dumps({k: _jsonable(v) for k, v in stamped.items()}, separators=(",", ":")) + "\n"
        data = memoryview(line.encode())
        try:
            while data:  # os.write may write less than asked (a filling disk) without an error
                n = os.write(self._fd, data)
                if n <= 0:
                    raise OSError(errno.ENOSPC, "no bytes written")
                data = data[n:]
        except OSError as exc:
            # a part of a line stays in the shard: a later record appended to it would be lost with
            # it, so this writer takes no more (the run stops; finished records are kept)
            self.close()
            raise OSError(exc.errno, f"cannot store a finished job's record in {self.path} "
                                     f"({exc.strerror or exc}); free space and run again to resume") from exc

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


_writers: dict[Path, RecordWriter] = {}


def writer_for(run_dir: Path) -> RecordWriter:
    """This process's writer for ``run_dir`` (workers keep theirs across tasks)."""
    run_dir = Path(run_dir).resolve()
    w = _writers.get(run_dir)
    if w is None or w._fd < 0:
        w = _writers[run_dir] = RecordWriter(run_dir)
    return w


def close_writers() -> None:
    for w in _writers.values():
        w.close()
    _writers.clear()


_warned_damage: set[tuple[str, int]] = set()


def read_records(run_dir: Path) -> list[dict[str, Any]]:
    """Every complete record in the run directory, in shard then line order."""
    out: list[dict[str, Any]] = []
    records = Path(run_dir) / RECORDS_DIR
    if not records.is_dir():
        return out
    for shard in sorted(records.glob("*.jsonl")):
        bad: list[int] = []
        with open(shard, "rb") as f:
            for number, raw in enumerate(f, 1):
                if not raw.endswith(b"\n"):
                    continue  # torn write of a killed process: that job is simply not done
                try:
                    rec = json.loads(raw)
                except ValueError:  # not JSON, or not UTF-8
                    rec = None
                if not isinstance(rec, dict):
                    bad.append(number)
                    continue
                out.append({k: _from_json(v) for k, v in rec.items()})
        if bad and (str(shard), len(bad)) not in _warned_damage:  # once per process, not per read
            _warned_damage.add((str(shard), len(bad)))
            # only a torn last line is normal (a killed run); anything else is damage: its jobs
            # run again, and the user hears which file is damaged
            shown = ", ".join(map(str, bad[:10])) + (" ..." if len(bad) > 10 else "")
            print(f"lcbench: warning: {shard}: {len(bad)} damaged line(s) (line {shown}) are not job records; "
                  f"ignored, so their jobs run again", file=sys.stderr, flush=True)
    return out


def slot_of(record: dict[str, Any]) -> tuple:
    """The row a record fills in results.csv: (codec, rate_param, quality, image)."""
    return (record.get("codec"), record.get("rate_param"), record.get("quality"), record.get("image"))


def latest_by_job(records: Iterable[dict[str, Any]], planned: Mapping[tuple, str] | None = None,
                  versions: Mapping[str, str] | None = None,
                  current_key: Callable[[tuple], str | None] | None = None) -> dict[tuple, dict[str, Any]]:
    """One record per results.csv row (``slot_of``).

    Several keys can fill one row: the same codec label and rate after a new codec version,
    an edited image or new metric definitions. A row in ``planned`` (this run's jobs: slot ->
    key) shows only its planned key's record, and nothing while that job is not done, so a
    result of an older version never stands in for the current one. Other rows show the key
    such a job would have now (``current_key(slot)``: the codec's current version, the image
    file as it is now, today's metric definitions), and are left out when only other keys
    measured them (the next run of that codec fills them). Where ``current_key`` cannot say
    (None: the image is not in the dataset any more), the key written last among the records
    of the codec's current version (``versions``: label -> version, from run.json). Within one
    key a success wins over a failure, later over earlier.
    """
    by_slot: dict[tuple, list[tuple[int, int, dict[str, Any]]]] = {}
    for order, rec in enumerate(records):
        by_slot.setdefault(slot_of(rec), []).append((int(rec.get(WRITTEN_NS) or 0), order, rec))
    best: dict[tuple, dict[str, Any]] = {}
    for slot, entries in by_slot.items():
        entries.sort(key=lambda e: (e[0], e[1]))  # records from before time stamps: read order
        records_in_order = [e[2] for e in entries]
        now = current_key(slot) if current_key is not None and not (planned and slot in planned) else None
        if planned is not None and slot in planned:
            key = planned[slot]
        elif now is not None:
            key = now  # an edited image or new metric definitions: older records do not fill the row
        else:
            current = (versions or {}).get(slot[0])
            of_current = [r for r in records_in_order if r.get("codec_version") == current]
            if current is not None and not of_current:
                continue  # only an older version measured this row: one label, one version in results.csv
            key = (of_current or records_in_order)[-1].get("key")
        same_key = [r for r in records_in_order if r.get("key") == key]
        if not same_key:
            continue
        ok = [r for r in same_key if not r.get("error")]
        best[slot] = ok[-1] if ok else same_key[-1]
    return best


def write_results_csv(run_dir: Path, records: list[dict[str, Any]]) -> Path:
    """Rewrite results.csv atomically from records (sorted for stable diffs)."""
    df = records_to_frame(records)
    path = Path(run_dir) / RESULTS_CSV
    # a temp name of this process's own: two runs into one directory must not rename each other's file
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        df.to_csv(tmp, index=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def records_to_frame(records: list[dict[str, Any]]):
    import pandas as pd

    df = pd.DataFrame.from_records(records)
    for col in COLUMNS:
        if col not in df.columns:
            df[col] = None
    extras = [c for c in df.columns if c not in COLUMNS and not str(c).startswith("_")]
    df = df[list(COLUMNS) + extras]
    for col in NUMERIC_COLUMNS:  # JSON null -> NaN, so metric columns are always float
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    for col in INTEGER_COLUMNS:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("Int64")
    if len(df):
        df["error"] = df["error"].fillna("")
        df["notes"] = df["notes"].fillna("")
        df = df.sort_values(["codec", "quality", "image"], kind="stable").reset_index(drop=True)
    return df
