"""Request traces: loading, validation, time scaling and binning for trace replay (NumPy, outside jit).

Two CSV formats are accepted (the header line decides which; both need it):

* **Azure** (the Azure LLM inference traces 2023): ``TIMESTAMP,ContextTokens,GeneratedTokens`` with
  wall-clock timestamps such as ``2023-11-16 18:17:03.9799600`` (up to nine fractional digits; read as
  UTC, no time zone). One tenant per file.
* **Generic**: ``arrival_s,prompt_tokens,output_tokens[,tenant]``. ``arrival_s`` is a float in
  seconds from any origin (only differences matter), ``prompt_tokens``/``output_tokens`` are
  positive integers, ``tenant`` (optional) is an integer id or a name. Integer ids are mapped to
  tenant rows in ascending order (``0, 1, 2`` stay ``0, 1, 2``; ``3, 7`` become ``0, 1``); names in
  order of first appearance. Columns may come in any order; unknown columns are an error.

In both, rows must be in non-decreasing arrival order, token counts must be positive integers and
blank lines are skipped. A malformed file raises :class:`TraceFormatError`, whose message names the
file, the line (1-based, the header is line 1) and the column (1-based index and name).

Replay then goes ``load_trace`` -> (``merge_traces`` for several tenants) -> (``scale_time`` to
compress time) -> :func:`bin_trace`, which returns the ``TaskSpec.trace`` dict the environment
replays: per control interval (bin) and tenant, the arrival count, the offsets within the interval
and the prompt/output lengths.

This module imports no task code: it turns CSV files into NumPy arrays. ``inferencegym traces FILE
[FILE ...]`` prints :func:`trace_stats` of trace files (the numbers in ``docs/traces.md``).
"""

from __future__ import annotations

import calendar
import csv
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
GENERIC_REQUIRED = ("arrival_s", "prompt_tokens", "output_tokens")
GENERIC_OPTIONAL = ("tenant",)

# The traces shipped in gymjax/data (CC-BY 4.0, see gymjax/data/README.md).
PACKAGED_TRACES = {
    "azure-code": "azure_llm_inference_2023_code.csv",
    "azure-conv": "azure_llm_inference_2023_conv.csv",
}

_TIMESTAMP = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?$")


class TraceFormatError(ValueError):
    """A malformed trace file. ``path``, ``line`` (1-based) and ``column`` (1-based, or None when the
    problem is the whole line/file) say where."""

    def __init__(self, path: str, line: int, column: int | None, column_name: str | None, message: str):
        self.path, self.line, self.column, self.column_name = path, line, column, column_name
        where = f"{path}, line {line}"
        if column is not None:
            where += f", column {column}" + (f" ({column_name})" if column_name else "")
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True, eq=False)
class Trace:
    """Requests sorted by arrival (stable: file order among equal times).

    ``arrival_s`` float64 [N]: seconds from the trace's origin (Azure: seconds since the Unix epoch,
    so traces of the same hour line up; generic: the file's own origin). ``prompt_tokens``,
    ``output_tokens`` int64 [N] >= 1. ``tenant`` int32 [N] in ``[0, len(tenant_names))``.
    """

    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    tenant: np.ndarray
    tenant_names: tuple[str, ...]
    source: str = ""

    @property
    def n_requests(self) -> int:
        return int(self.arrival_s.shape[0])

    @property
    def n_tenants(self) -> int:
        return len(self.tenant_names)

    @property
    def duration_s(self) -> float:
        """Time from the first to the last arrival."""
        return float(self.arrival_s[-1] - self.arrival_s[0]) if self.n_requests else 0.0

    def select(self, tenant: int | str) -> Trace:
        """The requests of one tenant, as a one-tenant trace (same time origin)."""
        t = self._tenant_index(tenant)
        m = self.tenant == t
        return Trace(self.arrival_s[m], self.prompt_tokens[m], self.output_tokens[m], np.zeros(int(m.sum()), np.int32),
                     (self.tenant_names[t],), self.source)

    def _tenant_index(self, tenant: int | str) -> int:
        if isinstance(tenant, str):
            if tenant not in self.tenant_names:
                raise ValueError(f"unknown tenant {tenant!r}; tenants of this trace: {list(self.tenant_names)}")
            return self.tenant_names.index(tenant)
        t = int(tenant)
        if not 0 <= t < self.n_tenants:
            raise ValueError(f"tenant index {t} out of range [0, {self.n_tenants})")
        return t


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


def packaged_trace_path(name: str):
    """Path (an importlib.resources Traversable) of a trace shipped in ``gymjax/data``:
    ``"azure-code"`` or ``"azure-conv"``."""
    if name not in PACKAGED_TRACES:
        raise ValueError(f"unknown packaged trace {name!r}; valid: {sorted(PACKAGED_TRACES)}")
    return resources.files("gymjax").joinpath("data", PACKAGED_TRACES[name])


def load_packaged_trace(name: str) -> Trace:
    """Load a trace shipped with the package (``"azure-code"``, ``"azure-conv"``)."""
    res = packaged_trace_path(name)
    with resources.as_file(res) as p:
        tr = load_trace(p, tenant_name=name.removeprefix("azure-"))
    return tr


def load_trace(path: str | Path, tenant_name: str | None = None) -> Trace:
    """Load a trace CSV in the Azure or the generic format (decided by the header).

    ``tenant_name`` names the single tenant of an Azure file or of a generic file without a tenant
    column (default: the file's stem). Raises :class:`TraceFormatError` on a malformed file and
    ``FileNotFoundError`` if it does not exist.
    """
    path = Path(path)
    name = str(path)
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header, header_line = None, 1
        for row in reader:
            if any(c.strip() for c in row):
                header, header_line = [c.strip() for c in row], reader.line_num
                break
        if header is None:
            raise TraceFormatError(name, 1, 1, None, "empty file: expected a header line "
                                   f"'{','.join(AZURE_COLUMNS)}' or '{','.join(GENERIC_REQUIRED)}[,tenant]'")
        if set(header) & set(AZURE_COLUMNS):
            cols = _check_header(name, header_line, header, AZURE_COLUMNS, ())
            kind = "azure"
        else:
            cols = _check_header(name, header_line, header, GENERIC_REQUIRED, GENERIC_OPTIONAL)
            kind = "generic"
        rows = [(reader.line_num, row) for row in reader if any(c.strip() for c in row)]
    if not rows:
        raise TraceFormatError(name, header_line + 1, 1, None, "no requests: the file has a header but no data rows")

    n = len(rows)
    arrival = np.empty(n, np.float64)
    prompt = np.empty(n, np.int64)
    output = np.empty(n, np.int64)
    raw_tenant: list[str] = []
    time_col = "TIMESTAMP" if kind == "azure" else "arrival_s"
    p_col, o_col = ("ContextTokens", "GeneratedTokens") if kind == "azure" else ("prompt_tokens", "output_tokens")
    t0_ns = None
    prev = -math.inf
    for i, (line, row) in enumerate(rows):
        if len(row) != len(header):
            if len(row) < len(header):
                missing = len(row)  # 0-based index of the first missing column
                raise TraceFormatError(name, line, missing + 1, header[missing],
                                       f"missing value: the row has {len(row)} fields, the header {len(header)}")
            raise TraceFormatError(name, line, len(header) + 1, None,
                                   f"extra value {row[len(header)]!r}: the row has {len(row)} fields, the header {len(header)}")
        get = lambda c: (row[cols[c]].strip(), cols[c] + 1, c)  # noqa: E731
        if kind == "azure":
            # compared in integer nanoseconds (float64 epoch seconds resolve only ~0.2 us)
            t = _parse_timestamp(name, line, *get(time_col))
            if t0_ns is None:
                t0_ns = t
        else:
            t = _parse_float(name, line, *get(time_col))
        if t < prev:
            val, col, cname = get(time_col)
            raise TraceFormatError(name, line, col, cname, f"arrival {val!r} is earlier than the previous row's: "
                                   "rows must be sorted by arrival time (non-decreasing)")
        prev = t
        arrival[i] = t0_ns / 1e9 + (t - t0_ns) / 1e9 if kind == "azure" else t
        prompt[i] = _parse_tokens(name, line, *get(p_col))
        output[i] = _parse_tokens(name, line, *get(o_col))
        if "tenant" in cols:
            val, col, cname = get("tenant")
            if not val:
                raise TraceFormatError(name, line, col, cname, "empty tenant")
            raw_tenant.append(val)

    if raw_tenant:
        tenant, names = _tenant_ids(raw_tenant)
    else:
        tenant, names = np.zeros(n, np.int32), (tenant_name or path.stem,)
    return Trace(arrival, prompt, output, tenant, names, source=name)


def _check_header(path: str, line: int, header: list[str], required: tuple[str, ...], optional: tuple[str, ...]) -> dict[str, int]:
    cols: dict[str, int] = {}
    allowed = required + optional
    for j, h in enumerate(header):
        if h not in allowed:
            raise TraceFormatError(path, line, j + 1, h, f"unknown column {h!r}; expected the columns {', '.join(required)}"
                                   + (f" and optionally {', '.join(optional)}" if optional else ""))
        if h in cols:
            raise TraceFormatError(path, line, j + 1, h, f"duplicate column {h!r}")
        cols[h] = j
    for j, r in enumerate(required):
        if r not in cols:
            raise TraceFormatError(path, line, j + 1, r, f"missing column {r!r} in the header {','.join(header)!r}; "
                                   f"expected {','.join(required)}" + (f"[,{','.join(optional)}]" if optional else ""))
    return cols


def _parse_timestamp(path: str, line: int, val: str, col: int, cname: str) -> int:
    """Wall-clock timestamp -> integer nanoseconds since the Unix epoch (UTC)."""
    m = _TIMESTAMP.match(val)
    if m is None:
        raise TraceFormatError(path, line, col, cname, f"unparsable timestamp {val!r}; expected e.g. '2023-11-16 18:17:03.9799600'")
    y, mo, d, h, mi, s = (int(x) for x in m.groups()[:6])
    frac = m.group(7) or ""
    if not (1 <= mo <= 12 and 1 <= d <= calendar.monthrange(y, mo)[1] and h < 24 and mi < 60 and s < 61):
        raise TraceFormatError(path, line, col, cname, f"invalid date/time {val!r}")
    secs = calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0))
    return secs * 1_000_000_000 + int(frac.ljust(9, "0") or 0)


def _parse_float(path: str, line: int, val: str, col: int, cname: str) -> float:
    try:
        x = float(val)
    except ValueError:
        raise TraceFormatError(path, line, col, cname, f"non-numeric value {val!r}; expected seconds (a float)") from None
    if not math.isfinite(x):
        raise TraceFormatError(path, line, col, cname, f"non-finite value {val!r}")
    return x


def _parse_tokens(path: str, line: int, val: str, col: int, cname: str) -> int:
    try:
        x = int(val)
    except ValueError:
        try:
            f = float(val)
        except ValueError:
            raise TraceFormatError(path, line, col, cname, f"non-numeric value {val!r}; expected a positive integer token count") from None
        if not (math.isfinite(f) and f.is_integer()):
            raise TraceFormatError(path, line, col, cname, f"{val!r} is not a whole number of tokens") from None
        x = int(f)
    if x <= 0:
        raise TraceFormatError(path, line, col, cname, f"token count must be positive, got {val!r}")
    return x


def _tenant_ids(raw: list[str]) -> tuple[np.ndarray, tuple[str, ...]]:
    try:
        ints = [int(v) for v in raw]
    except ValueError:
        ints = None
    if ints is not None:
        uniq = sorted(set(ints))
        index = {v: i for i, v in enumerate(uniq)}
        return np.array([index[v] for v in ints], np.int32), tuple(str(v) for v in uniq)
    names: dict[str, int] = {}
    for v in raw:
        names.setdefault(v, len(names))
    return np.array([names[v] for v in raw], np.int32), tuple(names)


# --------------------------------------------------------------------------------------------------
# Transformations
# --------------------------------------------------------------------------------------------------


def merge_traces(traces: Sequence[Trace], names: Sequence[str] | None = None) -> Trace:
    """Replay several traces together: trace ``i``'s tenants become consecutive tenant rows (in the
    order given). Arrival times are kept as they are, so traces that share a clock (the Azure code
    and conversation traces, both wall-clock of the same hour) stay aligned on their common origin.
    ``names`` renames the resulting tenants."""
    if not traces:
        raise ValueError("merge_traces needs at least one trace")
    offs = np.cumsum([0] + [t.n_tenants for t in traces])
    arrival = np.concatenate([t.arrival_s for t in traces])
    order = np.argsort(arrival, kind="stable")
    tenant = np.concatenate([t.tenant + o for t, o in zip(traces, offs[:-1], strict=True)]).astype(np.int32)
    all_names = tuple(n for t in traces for n in t.tenant_names)
    if names is not None:
        if len(names) != len(all_names):
            raise ValueError(f"{len(names)} names for {len(all_names)} tenants")
        all_names = tuple(names)
    if len(set(all_names)) != len(all_names):
        raise ValueError(f"duplicate tenant names {all_names}; pass names=")
    cat = lambda a: np.concatenate([getattr(t, a) for t in traces])[order]  # noqa: E731
    return Trace(arrival[order], cat("prompt_tokens"), cat("output_tokens"), tenant[order], all_names,
                 source=" + ".join(t.source for t in traces))


def scale_time(trace: Trace, speedup: float) -> Trace:
    """Compress time by ``speedup`` (> 0) around the first arrival: a request ``x`` seconds after the
    first now arrives ``x / speedup`` seconds after it. The order, the lengths and the shape of the
    traffic (bursts, silent gaps, drift) are kept; rates are multiplied and durations divided by
    ``speedup``."""
    if not speedup > 0:
        raise ValueError(f"speedup must be > 0, got {speedup}")
    if trace.n_requests == 0:
        return trace
    t0 = trace.arrival_s[0]
    return Trace(t0 + (trace.arrival_s - t0) / speedup, trace.prompt_tokens, trace.output_tokens, trace.tenant,
                 trace.tenant_names, trace.source)


def bin_trace(trace: Trace, dt_s: float, tenants: Sequence[int | str] | None = None, origin_s: float | None = None,
              max_arrivals: int | None = None) -> dict[str, np.ndarray]:
    """Bin a trace into control intervals of ``dt_s`` seconds: the ``TaskSpec.trace`` dict.

    ``tenants`` picks which of the trace's tenants become rows ``0..T-1`` (default: all, in order).
    Bin ``b`` covers ``[origin_s + b*dt_s, origin_s + (b+1)*dt_s)``; ``origin_s`` defaults to the first
    arrival of the whole trace (all tenants share it). Returns numpy arrays:

    - ``count`` int32 [n_bins, T]: arrivals of tenant t in bin b (the true count);
    - ``offset_s`` float32 [n_bins, T, A]: seconds from the bin start, ascending in ``[0, dt_s)``;
    - ``prompt``, ``output`` int32 [n_bins, T, A]: token lengths;

    entries at and beyond the count are padding (offset ``dt_s``, lengths 1). ``A`` is the largest
    count of any bin and tenant, or ``max_arrivals`` if given: bins with more keep their true count
    but only the first ``A`` requests (the environment counts the rest as dropped at the door).
    ``n_bins`` reaches the bin of the last arrival.
    """
    if not dt_s > 0:
        raise ValueError(f"dt_s must be > 0, got {dt_s}")
    if trace.n_requests == 0:
        raise ValueError("cannot bin an empty trace")
    rows = list(range(trace.n_tenants)) if tenants is None else [trace._tenant_index(t) for t in tenants]
    if len(set(rows)) != len(rows):
        raise ValueError(f"tenants {tenants} repeat a tenant")
    origin = float(trace.arrival_s[0]) if origin_s is None else float(origin_s)
    rel = trace.arrival_s - origin
    if rel.min() < 0:
        raise ValueError(f"origin_s={origin_s} is after the first arrival ({trace.arrival_s[0]})")
    b = np.floor(rel / dt_s).astype(np.int64)
    n_bins = int(b.max()) + 1
    T = len(rows)
    row_of = np.full(trace.n_tenants, -1, np.int64)
    row_of[rows] = np.arange(T)
    r = row_of[trace.tenant]
    keep = r >= 0
    b, r, rel = b[keep], r[keep], rel[keep]
    prompt, output = trace.prompt_tokens[keep], trace.output_tokens[keep]

    count = np.zeros((n_bins, T), np.int64)
    np.add.at(count, (b, r), 1)
    # rank of each request within its (bin, tenant) cell: requests are sorted by time, so a stable
    # sort by cell keeps time order inside each cell
    cell = b * T + r
    order = np.argsort(cell, kind="stable")
    sorted_cell = cell[order]
    first = np.searchsorted(sorted_cell, sorted_cell, side="left")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size) - first
    A = int(count.max()) if max_arrivals is None else int(max_arrivals)
    if A < 1:
        raise ValueError(f"max_arrivals must be >= 1, got {max_arrivals}")
    fit = rank < A
    off = rel - b * dt_s
    # float rounding must not push an offset to dt_s (the next interval)
    off = np.clip(off, 0.0, np.nextafter(np.float32(dt_s), np.float32(0)))
    offset_s = np.full((n_bins, T, A), dt_s, np.float32)
    p = np.ones((n_bins, T, A), np.int32)
    o = np.ones((n_bins, T, A), np.int32)
    idx = (b[fit], r[fit], rank[fit])
    offset_s[idx] = off[fit].astype(np.float32)
    p[idx] = prompt[fit]
    o[idx] = output[fit]
    return {"count": count.astype(np.int32), "offset_s": offset_s, "prompt": p, "output": o}


# --------------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------------


def length_samples(trace: Trace, tenant: int | str = 0, which: str = "prompt") -> tuple[int, ...]:
    """The token lengths of one tenant, for ``LengthDist(samples=...)`` (:func:`gymjax.trace_tasks.length_dist`).
    ``which``: "prompt" | "output"."""
    if which not in ("prompt", "output"):
        raise ValueError(f"which must be 'prompt' or 'output', got {which!r}")
    arr = trace.prompt_tokens if which == "prompt" else trace.output_tokens
    return tuple(int(x) for x in arr[trace.tenant == trace._tenant_index(tenant)])


def trace_stats(trace: Trace) -> dict[str, dict[str, float]]:
    """Per-tenant statistics: requests, span, mean rate, inter-arrival CV, max/mean arrivals per
    second, gaps of 10 s or more and the longest, the range of arrivals per full minute, prompt and
    output p50/p90/p99/max and mean, and the Spearman rank correlation of prompt and output lengths."""
    out = {}
    for t, name in enumerate(trace.tenant_names):
        m = trace.tenant == t
        a, p, o = trace.arrival_s[m], trace.prompt_tokens[m], trace.output_tokens[m]
        span = float(a[-1] - a[0]) if a.size else 0.0
        gaps = np.diff(a)
        per_s = np.bincount(np.floor(a - a[0]).astype(np.int64)) if a.size else np.zeros(1)
        st = {"requests": int(a.size), "span_s": span, "mean_rps": a.size / span if span > 0 else float("nan"),
              "interarrival_cv": float(gaps.std() / gaps.mean()) if gaps.size and gaps.mean() > 0 else float("nan"),
              "max_per_s": int(per_s.max()), "mean_per_s": float(per_s.mean()),
              "gaps_over_10s": int((gaps >= 10.0).sum()),
              "max_gap_s": float(gaps.max()) if gaps.size else 0.0}
        per_min = np.bincount(np.floor((a - a[0]) / 60.0).astype(np.int64))[:-1] if a.size else np.zeros(0)  # full minutes
        st.update({"per_min_min": int(per_min.min()) if per_min.size else 0, "per_min_max": int(per_min.max()) if per_min.size else 0})
        for label, x in (("prompt", p), ("output", o)):
            q = np.percentile(x, [50, 90, 99]) if x.size else [np.nan] * 3
            st.update({f"{label}_p50": float(q[0]), f"{label}_p90": float(q[1]), f"{label}_p99": float(q[2]),
                       f"{label}_max": int(x.max()) if x.size else 0, f"{label}_mean": float(x.mean()) if x.size else np.nan})
        st["spearman_prompt_output"] = _spearman(p, o)
        out[name] = st
    return out


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    if x.size < 2:
        return float("nan")
    rank = lambda v: _average_ranks(v)  # noqa: E731
    return float(np.corrcoef(rank(x), rank(y))[0, 1])


def _average_ranks(v: np.ndarray) -> np.ndarray:
    order = np.argsort(v, kind="stable")
    sv = v[order]
    lo = np.searchsorted(sv, sv, side="left")
    hi = np.searchsorted(sv, sv, side="right")
    r = np.empty(v.size, np.float64)
    r[order] = (lo + hi - 1) / 2.0
    return r
