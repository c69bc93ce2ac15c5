"""Cost: what the devices cost over the window, per request and per 1k tokens.

The bill's view: every paid device is paid for the whole window, idle included, so
``cost_per_request_usd = window_hours x sum(resource $/h) / requests``. The busy-only figure beside
it (``busy_cost_per_request_usd``: busy device-hours x $/device-hour / requests) is the floor better
utilisation can approach. A scope (model, route) is charged per paid resource (host): each host's
window and busy cost is split among the scopes whose requests ran on it, by their share of the
device time of that host's model calls (token-weighted batch shares, as the ``requests`` view
shares it), else of the requests it served when it measured no device time; a host no request
links to is split by the scopes' share of all device time (else of requests). A model call no
request links to is attributed once, by the shares table that utilisation reads too
(analyses/utilization.py, BATCH_SHARES_SQL): to the requested models and routes its model name or
its host points to, in both splits, so a route and a model holding the same requests cost the same
per request. A call running a workload of its own (basis ``own``) counts under its own model name
in the model split (by_model's request-less row pays its calls' share of their hosts); the route
split has no row for it and spreads its cost over the routes. The scopes' costs add up to the
bill, and a cheap host's long calls do not absorb an expensive host's bill. Per 1k tokens: the
scope's cost over all its tokens (``cost_per_1k_tokens_usd``); input and output
tokens carry that same price (the ``cost_per_1k_input/output_tokens_usd`` keys hold it too).

Price per resource, first that applies: ``--price-per-hour`` (per device-hour: per GPU, or per CPU
instance) > a ``--price-file`` row > the resource's own ``inferaudit.price.usd_per_hour`` (also
per device-hour) > the instance type (``host.type``) in prices.json (the whole instance) > the
GPU model (``--gpu-model`` or the resource's) in prices.json x its GPU count > unpriced.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from functools import cached_property
from importlib import resources as importlib_resources
from pathlib import Path
from typing import Any

from inferaudit_analyzer.analyses._common import ratio
from inferaudit_analyzer.analyses.utilization import (
    BASIS_OWN,
    BATCHES_BY_HOST_SQL,
    RESOURCE_HOST_PREFIX,
    RESOURCE_HOST_SQL,
    SHARES_INLINE,
    Utilization,
    host_key_sql,
)
from inferaudit_sdk import semconv

NS_PER_HOUR = 3_600 * 1_000_000_000
_PRICE_ATTR = semconv.RES_PRICE_USD_PER_HOUR


class PriceFileError(ValueError):
    """The user's price file cannot be read; the message names the file and the problem."""


@dataclass(frozen=True)
class PriceTable:
    gpus: tuple[dict[str, Any], ...]
    instances: tuple[dict[str, Any], ...]
    origin: str
    note: str = ""
    cpu_fallback: dict[str, Any] | None = None
    gpu_patterns: tuple[re.Pattern[str], ...] = ()  # compiled ``gpus`` patterns, same order


@dataclass(frozen=True)
class ResourcePrice:
    resource_id: int | None
    device_type: str
    devices: int
    usd_per_hour: float | None  # for the whole resource (all its devices)
    busy_ns: int
    source: str
    basis: str
    as_of: str | None = None
    busy_known: bool = True  # False: no model-call timing (requests only): no busy floor

    @property
    def usd_per_device_hour(self) -> float | None:
        return None if self.usd_per_hour is None else self.usd_per_hour / max(self.devices, 1)


def valid_price(x: Any) -> bool:
    """A usable $/h: a finite number >= 0 (a bool is not a price, NaN and -5 are not either)."""
    return type(x) in (int, float) and math.isfinite(x) and x >= 0


def _gpu_pattern(row: dict[str, Any]) -> str:
    return row.get("pattern") or rf"\b{re.escape(row['gpu'])}\b"


def load_price_table(path: str | Path | None = None) -> PriceTable:
    """The bundled prices.json, or a user file of the same shape (``gpus``/``instances``)."""
    if path is None:
        text = importlib_resources.files("inferaudit_analyzer").joinpath("prices.json").read_text()
        origin = "inferaudit_analyzer/prices.json"
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise PriceFileError(f"{path}: cannot read price file ({exc.strerror or exc})") from exc
        except UnicodeDecodeError as exc:
            raise PriceFileError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
        origin = str(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PriceFileError(f"{origin}: line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
    if not isinstance(data, dict):
        raise PriceFileError(f"{origin}: expected a JSON object with 'gpus' and/or 'instances'")
    gpus, instances = data.get("gpus", []), data.get("instances", [])
    for key, rows in (("gpus", gpus), ("instances", instances)):
        if not isinstance(rows, list):
            raise PriceFileError(f"{origin}: '{key}' must be a list")
        for i, row in enumerate(rows):
            if not isinstance(row, dict) or not valid_price(row.get("usd_per_hour")):
                got = row.get("usd_per_hour") if isinstance(row, dict) else row
                raise PriceFileError(f"{origin}: {key}[{i}] needs a 'usd_per_hour' that is a "
                                     f"finite number >= 0, got {got!r}")
            pattern = row.get("pattern")
            if key == "gpus" and (not isinstance(pattern, str | None)
                                  or not (pattern or isinstance(row.get("gpu"), str))):
                raise PriceFileError(f"{origin}: gpus[{i}] needs a 'pattern' or 'gpu' string")
            if key == "instances" and not isinstance(row.get("host_type"), str):
                raise PriceFileError(f"{origin}: instances[{i}] needs a 'host_type' string")
    patterns = []
    for i, row in enumerate(gpus):  # compiled now: a bad one fails before a long read
        try:
            patterns.append(re.compile(_gpu_pattern(row), flags=re.IGNORECASE))
        except re.error as exc:
            raise PriceFileError(f"{origin}: gpus[{i}]: bad pattern {_gpu_pattern(row)!r}: "
                                 f"{exc}") from exc
    fallback = data.get("cpu_fallback")
    if fallback is not None and not (isinstance(fallback, dict) and valid_price(
            fallback.get("usd_per_vcpu_hour"))):
        raise PriceFileError(f"{origin}: 'cpu_fallback' needs a 'usd_per_vcpu_hour' that is a "
                             "finite number >= 0")
    return PriceTable(tuple(gpus), tuple(instances), origin, str(data.get("note", "")),
                      fallback, tuple(patterns))


def _match_gpu(table: PriceTable, gpu_model: str | None) -> dict[str, Any] | None:
    if not gpu_model:
        return None
    patterns = table.gpu_patterns or tuple(
        re.compile(_gpu_pattern(row), flags=re.IGNORECASE) for row in table.gpus)
    for row, pattern in zip(table.gpus, patterns, strict=True):
        if pattern.search(gpu_model):
            return row
    return None


def _match_instance(table: PriceTable, host_type: str | None) -> dict[str, Any] | None:
    if not host_type:
        return None
    for row in table.instances:
        if row["host_type"].lower() == host_type.lower():
            return row
    return None


RESOURCE_SQL = """
SELECT resource_id, price_usd_per_hour, gpu_model, host_type FROM resources
"""


def resolve_prices(con: Any, util: Utilization, *, price_per_hour: float | None = None,
                   price_file: str | Path | None = None,
                   gpu_model: str | None = None) -> list[ResourcePrice]:
    """One price per paid resource (those that ran model calls), with where it came from."""
    user_table = load_price_table(price_file) if price_file is not None else None
    bundled = load_price_table()
    res_attrs = {r[0]: r for r in con.execute(RESOURCE_SQL).fetchall()}
    units = list(util.resources)
    out: list[ResourcePrice] = []
    for u in units:
        attrs = res_attrs.get(u.resource_id)
        own_price = attrs[1] if attrs else None
        ignored = ""
        if own_price is not None and not valid_price(own_price):
            # a negative or NaN price would make every cost negative or NaN: treat as absent,
            # and say so beside the price used instead
            ignored = (f"; ignored resource attribute {_PRICE_ATTR} = {own_price!r} "
                       "(not a finite number >= 0)")
            own_price = None
        model = gpu_model or u.gpu_model or (attrs[2] if attrs else None)
        host_type = u.host_type or (attrs[3] if attrs else None)
        n = u.devices
        if price_per_hour is not None:
            out.append(ResourcePrice(u.resource_id, u.device_type, n, price_per_hour * n, u.busy_ns,
                                     "--price-per-hour", f"{price_per_hour} $/device-hour x {n}"))
            continue
        priced = False
        for table in (t for t in (user_table, bundled) if t is not None):
            if table is bundled and own_price is not None:
                out.append(ResourcePrice(u.resource_id, u.device_type, n, float(own_price) * n,
                                         u.busy_ns, f"resource attribute {_PRICE_ATTR}",
                                         f"{own_price} $/device-hour x {n}"))
                priced = True
                break
            inst = _match_instance(table, host_type)
            if inst is not None:
                out.append(ResourcePrice(u.resource_id, u.device_type, n,
                                         float(inst["usd_per_hour"]), u.busy_ns,
                                         f"{table.origin}: instance {inst['host_type']}",
                                         inst.get("source", ""), inst.get("as_of")))
                priced = True
                break
            # an explicit --gpu-model wins over a device type inferred as CPU (foreign spans
            # often say nothing of the device)
            gpu = _match_gpu(table, model) if u.device_type != "cpu" or gpu_model else None
            if gpu is not None:
                out.append(ResourcePrice(u.resource_id, u.device_type, n,
                                         float(gpu["usd_per_hour"]) * n, u.busy_ns,
                                         f"{table.origin}: GPU {gpu.get('gpu', '?')}",
                                         f"{gpu.get('basis', '')} x {n}; {gpu.get('source', '')}",
                                         gpu.get("as_of")))
                priced = True
                break
        fallback = next((t.cpu_fallback for t in (user_table, bundled)
                         if t is not None and t.cpu_fallback), None)
        if not priced and u.device_type == "cpu" and u.cpu_cores and fallback:
            rate = float(fallback["usd_per_vcpu_hour"])
            out.append(ResourcePrice(
                u.resource_id, u.device_type, n, rate * u.cpu_cores, u.busy_ns,
                "assumed: per-vCPU rate of prices.json cpu_fallback (host.type unknown)",
                f"{rate} $/vCPU-hour x {u.cpu_cores} cores; {fallback.get('basis', '')}",
                fallback.get("as_of")))
            priced = True
        if not priced:
            out.append(ResourcePrice(u.resource_id, u.device_type, n, None, u.busy_ns, "unpriced",
                                     "no price known: pass --price-per-hour or --price-file"))
        if ignored:
            out[-1] = replace(out[-1], basis=out[-1].basis + ignored)
        if not u.busy_known:
            out[-1] = replace(out[-1], busy_known=False)
    return out


# Device time and requests per (host, requested model, route): each request's token-weighted share
# of every model call that served it, on the call's host; a request no call served, its own device
# time on its own host. What a host's bill is split by (CostModel.scope_cost). Whole ns per
# request, as the requests view rounds them, so the sums are exact on every engine.
USAGE_SQL = f"""
WITH sh AS (SELECT * FROM {{shares}} s WHERE req_span_id IS NOT NULL),
per AS (
    SELECT bh.host_key, sh.req_trace_id AS trace_id, sh.req_span_id AS span_id,
           CAST(COALESCE(bh.device_ns, 0) AS DOUBLE) * sh.f AS dev
    FROM sh JOIN ({BATCHES_BY_HOST_SQL}) bh
      ON bh.trace_id = sh.batch_trace_id AND bh.span_id = sh.batch_span_id
    UNION ALL
    SELECT {host_key_sql('q.resource_id')}, q.trace_id,
           q.span_id, CAST(q.device_ns AS DOUBLE)
    FROM requests q LEFT JOIN resources r ON r.resource_id = q.resource_id
    WHERE q.batches = 0
),
per_request AS (
    SELECT host_key, trace_id, span_id, CAST(SUM(dev) AS BIGINT) AS dev
    FROM per GROUP BY host_key, trace_id, span_id
)
SELECT pr.host_key, q.request_model, q.route, SUM(pr.dev) AS dev, COUNT(*) AS n
FROM per_request pr JOIN requests q ON q.trace_id = pr.trace_id AND q.span_id = pr.span_id
GROUP BY pr.host_key, q.request_model, q.route
"""

# Device time of the model calls no request links to, per (host, model, route, attribution basis):
# in no request's usage. The shares table (utilization.py: BATCH_SHARES_SQL) attributes each such
# call once, for utilisation and cost alike: to the requested models and routes its name or its
# host points to, else to its own model name (basis ``own``: by_model's request-less rows; the
# route split leaves those out, they have no route).
UNLINKED_USAGE_SQL = f"""
SELECT bh.host_key, sh.request_model, sh.route, sh.basis,
       CAST(SUM(CAST(COALESCE(bh.device_ns, 0) AS DOUBLE) * sh.f) AS BIGINT) AS dev
FROM {{shares}} sh JOIN ({BATCHES_BY_HOST_SQL}) bh
  ON bh.trace_id = sh.batch_trace_id AND bh.span_id = sh.batch_span_id
WHERE sh.req_span_id IS NULL
GROUP BY bh.host_key, sh.request_model, sh.route, sh.basis
"""


@dataclass(frozen=True)
class Usage:
    """What the requests of one (requested model, route) used of one host; for calls no request
    links to (requests 0), what the shares table attributes to that (model, route)."""

    host_key: str | None
    request_model: str | None
    route: str | None
    device_ns: int
    requests: int
    # device time of calls no request links to that run a workload of their own (BASIS_OWN):
    # in the model split only
    request_less: bool = False


def measure_usage(con: Any, shares: str = SHARES_INLINE,
                  ) -> tuple[tuple[Usage, ...], dict[Any, str | None]]:
    """The usage rows, and each resource id's host key (how a price finds its host's rows);
    ``shares``: the batch shares, inline or the name of their snapshot."""
    rows = tuple(Usage(h, m, r, int(d or 0), int(n or 0)) for h, m, r, d, n in
                 con.execute(USAGE_SQL.replace("{shares}", shares)).fetchall())
    hosts = {rid: hk for rid, hk in con.execute(RESOURCE_HOST_SQL).fetchall()}
    return rows, hosts


def measure_unlinked_usage(con: Any, shares: str = SHARES_INLINE) -> tuple[Usage, ...]:
    """What the model calls no request links to used of each host, under the (model, route) the
    shares table attributes them to (no request): those of a workload of their own
    (``request_less``) are what a model split charges a request-less model."""
    return tuple(Usage(h, m, r, int(d or 0), 0, basis == BASIS_OWN) for h, m, r, basis, d in
                 con.execute(UNLINKED_USAGE_SQL.replace("{shares}", shares)).fetchall())


# A scope of the cost split: a Usage field and the values of it the scope holds (several where
# the report merges keys: no route and a route named "(none)").
Scope = tuple[str, tuple[Any, ...]]
SCOPE_FIELDS = ("request_model", "route")


# Fewer requests with a first-token time than this: the split between prompt and output is not
# read from them (a handful of streamed requests would price the whole scope's tokens).
MIN_PHASED_REQUESTS = 20


@dataclass(frozen=True)
class PhaseTime:
    """A scope's requests' time in the prompt's phase (to the first token, less queueing) and
    in the output's (after it), over the ``requests`` that measured both. A decode step costs
    far more per token than a prompt token's share of prefill, so one price per token
    under-prices output; the phases' time is the measured split of the same bill."""

    requests: int
    prefill_ns: int
    decode_ns: int

    @property
    def input_share(self) -> float | None:
        total = self.prefill_ns + self.decode_ns
        if self.requests < MIN_PHASED_REQUESTS or total <= 0:
            return None
        return self.prefill_ns / total


@dataclass(frozen=True)
class CostModel:
    """Window cost and busy cost over all paid resources; None where any resource is unpriced."""

    prices: tuple[ResourcePrice, ...]
    window_ns: int
    total_device_ns: int  # requests' device time: a scope's share where a host has no usage
    total_requests: int
    usage: tuple[Usage, ...] = ()  # per host: what scopes' costs are split by (with_usage)
    resource_hosts: dict[Any, str | None] = field(default_factory=dict)
    # calls no request links to (measure_unlinked_usage), as the shares table attributes them
    unlinked_usage: tuple[Usage, ...] = ()

    def with_usage(self, con: Any, shares: str = SHARES_INLINE) -> CostModel:
        """This model, splitting each host's cost by what each scope used of it."""
        rows, hosts = measure_usage(con, shares)
        return replace(self, usage=rows, resource_hosts=hosts,
                       unlinked_usage=measure_unlinked_usage(con, shares))

    @property
    def priced(self) -> bool:
        return bool(self.prices) and all(p.usd_per_hour is not None for p in self.prices)

    @property
    def window_cost_usd(self) -> float | None:
        if not self.priced:
            return None
        return sum(p.usd_per_hour for p in self.prices) * self.window_ns / NS_PER_HOUR

    @property
    def busy_known(self) -> bool:
        return all(p.busy_known for p in self.prices)

    @property
    def busy_cost_usd(self) -> float | None:
        if not self.priced or not self.busy_known:
            return None  # unknown, not 0: nothing timed the model calls
        return sum(p.busy_ns / NS_PER_HOUR * p.usd_per_device_hour for p in self.prices)

    def _host_of(self, p: ResourcePrice) -> str | None:
        if p.resource_id in self.resource_hosts:
            return self.resource_hosts[p.resource_id]
        return None if p.resource_id is None else f"{RESOURCE_HOST_PREFIX}{p.resource_id}"

    @cached_property
    def _usage_index(self) -> tuple[dict[tuple[str, Any], tuple[int, int]],
                                    dict[tuple[str, Any, Any], tuple[int, int]]]:
        """The usage summed once: per (scope field, host) (device ns, requests), and per (scope
        field, value, host); every scope's split then reads a few sums instead of all the rows.
        Calls no request links to count in both splits where the shares table attributes them
        to requested models, in the model split only where they run a model of their own."""
        hosts: dict[tuple[str, Any], tuple[int, int]] = {}
        scopes: dict[tuple[str, Any, Any], tuple[int, int]] = {}
        rows: list[tuple[Usage, tuple[str, ...]]] = [(u, SCOPE_FIELDS) for u in self.usage]
        rows += [(u, ("request_model",) if u.request_less else SCOPE_FIELDS)
                 for u in self.unlinked_usage]
        for u, fields in rows:
            for field_name in fields:
                value = getattr(u, field_name)
                d, n = hosts.get((field_name, u.host_key), (0, 0))
                hosts[(field_name, u.host_key)] = (d + u.device_ns, n + u.requests)
                d, n = scopes.get((field_name, value, u.host_key), (0, 0))
                scopes[(field_name, value, u.host_key)] = (d + u.device_ns, n + u.requests)
        return hosts, scopes

    def _split(self, scope: Scope,
               fallback: float | None) -> tuple[float | None, float | None]:
        """(window cost, busy cost) of ``scope``: host by host, its share of what the host's
        requests used (device time, else requests), else ``fallback``."""
        field_name, values = scope
        if field_name not in SCOPE_FIELDS:
            raise ValueError(f"a scope is one of {SCOPE_FIELDS}, not {field_name!r}")
        hosts, scopes = self._usage_index
        window_parts: list[float] = []
        busy_parts: list[float] = []
        for p in self.prices:
            host = self._host_of(p)
            dev_all, n_all = hosts.get((field_name, host), (0, 0))
            mine = [scopes.get((field_name, v, host), (0, 0)) for v in values]
            if dev_all > 0:
                share: float | None = sum(d for d, _ in mine) / dev_all
            elif n_all > 0:
                share = sum(n for _, n in mine) / n_all
            else:
                share = fallback
            if share is None:
                return None, None
            window_parts.append(p.usd_per_hour * self.window_ns / NS_PER_HOUR * share)
            busy_parts.append(p.busy_ns / NS_PER_HOUR * p.usd_per_device_hour * share)
        # fsum: the same figure whatever order the engine listed the resources in
        return math.fsum(window_parts), math.fsum(busy_parts)

    def scope_cost(self, requests: int, device_ns: int, input_tokens: int, output_tokens: int,
                   scope: Scope | None = None, phases: PhaseTime | None = None
                   ) -> dict[str, Any]:
        """Cost fields of a scope holding ``requests`` requests and ``device_ns`` of device time;
        ``scope`` names its usage rows: (``"request_model"`` or ``"route"``, the values it
        holds); None: the whole input, which pays the whole bill. ``phases``: its requests'
        time in the prompt's and the output's phase, which prices the two sides apart."""
        share = ratio(device_ns, self.total_device_ns)
        if share is None:
            share = ratio(requests, self.total_requests)
        total, busy = self.window_cost_usd, self.busy_cost_usd
        if scope is None or total is None or not self.usage:
            cost = None if total is None or share is None else total * share
            busy_cost = None if busy is None or share is None else busy * share
        else:
            cost, busy_cost = self._split(scope, share)
            if busy is None:
                busy_cost = None
        tokens = input_tokens + output_tokens
        per_1k = None if cost is None or tokens == 0 else cost / (tokens / 1000.0)
        per_in = per_1k if input_tokens else None
        per_out = per_1k if output_tokens else None
        in_share = None if phases is None else phases.input_share
        if cost is not None and in_share is not None and input_tokens and output_tokens:
            per_in = cost * in_share / (input_tokens / 1000.0)
            per_out = cost * (1.0 - in_share) / (output_tokens / 1000.0)
        else:
            in_share = None
        return {
            "cost_usd": cost,
            "busy_cost_usd": busy_cost,
            "cost_per_request_usd": None if cost is None or not requests else cost / requests,
            "busy_cost_per_request_usd": (None if busy_cost is None or not requests
                                          else busy_cost / requests),
            "cost_per_1k_tokens_usd": per_1k,
            # priced apart by the time each phase took where enough requests measured it, else
            # the one price per token on both sides
            "cost_per_1k_input_tokens_usd": per_in,
            "cost_per_1k_output_tokens_usd": per_out,
            "token_price_basis": ("phase_time" if in_share is not None else
                                  "token_share" if per_1k is not None else None),
            "input_phase_time_ratio": None if in_share is None else round(in_share, 4),
            "phase_time_requests": 0 if phases is None else phases.requests,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "priced": self.priced,
            "window_cost_usd": self.window_cost_usd,
            "busy_cost_usd": self.busy_cost_usd,
            "rule": ("cost_per_request = window hours x sum of resource $/h / requests (idle "
                     "included); busy_cost_per_request = busy device-hours x $/device-hour / "
                     "requests; a scope (model, route) is charged host by host: each host's cost "
                     "is split among the scopes whose requests ran on it, by their token-weighted "
                     "share of its model calls' device time (a call no request links to as the "
                     "batch shares attribute it; one running a workload of its own in the model "
                     "split only, under its own model name); cost_per_1k_tokens = a scope's cost "
                     "over its input + output tokens; cost_per_1k_input_tokens / _output_tokens: "
                     "the scope's cost split between the prompt and the output by the time their "
                     "phases took (time to first token less queueing, and the rest of the "
                     f"request) where at least {MIN_PHASED_REQUESTS} requests measured both "
                     "(token_price_basis phase_time), else by token share, one price per token "
                     "whichever side (token_price_basis token_share)"),
            "resources": [
                {"resource_id": p.resource_id, "device_type": p.device_type, "devices": p.devices,
                 "usd_per_hour": p.usd_per_hour, "usd_per_device_hour": p.usd_per_device_hour,
                 "source": p.source, "basis": p.basis, "as_of": p.as_of}
                for p in self.prices
            ],
        }
