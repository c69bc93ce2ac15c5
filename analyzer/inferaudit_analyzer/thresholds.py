"""Every threshold a finding or the bottleneck verdict uses, named once, with where it comes from.

A threshold without a published source says so ("house rule") and why the value is what it is;
docs/analysis.md lists them all. Ratios are 0-1, durations ns.
"""

from __future__ import annotations

# --- Device activity --------------------------------------------------------------------------
# NVIDIA DCGM user guide, "Profiling metrics" (SM Activity, DCGM_FI_PROF_SM_ACTIVE):
# "A value of 0.8 or greater is necessary, but not sufficient, for effective use of the GPU. A
# value less than 0.5 likely indicates ineffective GPU usage."
# https://docs.nvidia.com/datacenter/dcgm/latest/user-guide/feature-overview.html#metrics
# We apply the same cut-offs to busy-time utilisation (a looser, upper-bound signal).
SATURATED_UTILIZATION_RATIO = 0.8
UNDERUSED_UTILIZATION_RATIO = 0.5

# --- Idle device while requests wait ----------------------------------------------------------
# House rule: share of the time with at least one request in flight during which no model call
# ran. Above 0.2 the serving stack (tokenising, Python, I/O, a sequential pipeline) holds a fifth
# of every request's wait with the device doing nothing; above 0.5 it is most of it.
IDLE_WHILE_WAITING_RATIO = 0.2
IDLE_WHILE_WAITING_HIGH_RATIO = 0.5
# House rule: requests queue for the device when the p95 queue time is at least one median model
# call: the slowest 5 % wait longer than a whole call takes, so demand is not below capacity.
QUEUED_P95_OVER_SERVICE_RATIO = 1.0
# House rule: a CPU host whose model calls run on fewer intra-op threads than it has cores pays
# for cores they can never use; worth a finding from a quarter of its CPU time unreachable
# (1 thread of 2 cores: half; 6 of 8: a quarter), medium from half.
UNREACHABLE_CORES_RATIO = 0.25
UNREACHABLE_CORES_MEDIUM_RATIO = 0.5
# House rule: a clock offset between the resource that records model calls and the one that
# records their requests counts when it exceeds this share of the median request (the sweeps'
# error is about offset / request duration; idle-while-waiting fires at 0.2), over at least
# this many calls. Then idle-while-waiting and concurrency-while-busy are not measured.
CLOCK_SKEW_MAX_SHARE = 0.1
CLOCK_SKEW_MIN_PAIRS = 10

# --- Batching -------------------------------------------------------------------------------
# Unbatched serving: batch size stays 1 (share of size-1 batches at or above this) while, during
# model calls, on average at least this many requests are in flight (>1 means others wait).
UNBATCHED_SIZE1_SHARE = 0.9
UNBATCHED_MIN_CONCURRENCY = 1.5
UNBATCHED_HIGH_CONCURRENCY = 2.0
MIN_BATCHES_FOR_BATCHING = 10  # fewer model calls than this say nothing about a policy
# Padding: share of the padded input tensor that is padding (1 - real / padded).
PADDING_WASTE_RATIO = 0.2
PADDING_WASTE_HIGH_RATIO = 0.4

# --- Redundant compute ------------------------------------------------------------------------
# SimHash near-duplicates: Hamming distance <= 3 of 64 bits, the cut-off Manku, Jain and Das
# Sarma validated for near-duplicate web pages ("Detecting Near-Duplicates for Web Crawling",
# WWW 2007, k = 3 for 64-bit fingerprints).
NEAR_DUP_HAMMING_BITS = 3
SIMHASH_BANDS = 4  # 4 bands of 16 bits: any pair within 3 bits agrees exactly on one band
# House rule: 5 % of requests recomputing known answers is worth a cache.
CACHEABLE_SHARE_RATIO = 0.05
CACHEABLE_SHARE_HIGH_RATIO = 0.2

# --- Routing ----------------------------------------------------------------------------------
# "Short" request: input + output tokens at or below this quantile of all requests (house rule,
# the brief of issue #3: the p25).
ROUTING_SHORT_QUANTILE = 0.25
ROUTING_SHARE_RATIO = 0.1  # share of all requests that are short and on the largest model
ROUTING_MIN_REQUESTS = 20
# Being at or below the p25 holds for a quarter of requests even when all are alike, so the short
# ones must also be clearly shorter (cutoff <= this x the mean tokens of the other served
# requests) and weigh something (>= this share of the device time): house rules, so that the
# finding says something only where routing could move a visible share of the work.
ROUTING_SPREAD_RATIO = 0.5
ROUTING_MIN_TIME_SHARE = 0.05

# --- Host<->device copies ---------------------------------------------------------------------
# House rule: copies on the hot path taking >= 10 % of device-busy time are worth pinning,
# batching or overlapping; >= 30 % means data movement starves the device (hardware layer).
COPY_TIME_RATIO = 0.1
COPY_BOUND_RATIO = 0.3
# Pageable (unpinned) host memory forces synchronous copies (CUDA C++ Best Practices Guide,
# "Pinned Memory"); flag when most copied bytes are pageable.
PAGEABLE_SHARE_RATIO = 0.5
MIN_COPY_BYTES = 1 << 20  # below 1 MiB copied in total there is nothing to fix

# --- Decode physics ---------------------------------------------------------------------------
# Memory-controller busy (NVML memory utilisation) at or above 0.6 during decode-dominated work:
# autoregressive decode streams the weights once per step, so HBM bandwidth bounds it; that is the
# model's physics, not a hardware fault (Kwon et al., vLLM, SOSP 2023, section 2.3).
DRAM_BOUND_MEMORY_UTIL_RATIO = 0.6
DECODE_DOMINATED_OUTPUT_SHARE = 0.5  # output tokens / (input + output)

# --- Kineto (kernel traces) -------------------------------------------------------------------
# HTA "Temporal breakdown": idle / compute / non-compute share of GPU time.
# https://hta.readthedocs.io/en/latest/source/features/temporal_breakdown.html
KINETO_IDLE_PCT_RUNTIME = 50.0  # house rule: GPU idle for half the profiled window
# House rule, as COPY_BOUND_RATIO: host<->device copy time with no kernel running on the device
# (copy_bandwidth.exposed_host_copy_ns) >= 0.3 of the profiled span (span_ns) means the device
# is starved by the link. Not HTA's non-compute share: that also holds communication kernels.
KINETO_EXPOSED_HOST_COPY_RATIO_HARDWARE = 0.3
# Device idle while the host does other work (kineto device_idle_host_bound), graded by the
# share of the profiled span the long (>= 100 us) host waits took. House rule: >= 0.5, the host
# held the device idle for half the window (the DCGM "likely ineffective" line seen from the
# idle side); >= 0.2, a fifth of it, as IDLE_WHILE_WAITING_RATIO; below that, low.
HOST_WAIT_SPAN_HIGH_RATIO = 0.5
HOST_WAIT_SPAN_MEDIUM_RATIO = 0.2

# --- Coverage ---------------------------------------------------------------------------------
LOW_COVERAGE_RATIO = 0.9  # below 90 % of spans seen, verdicts lose confidence
VERY_LOW_COVERAGE_RATIO = 0.5
MIN_REQUESTS_FOR_CONFIDENCE = 100  # below this the verdict's confidence scales down linearly
# House rules for separate runs read together (analyses/runs.py): processes whose spans are
# at least a second apart are separate runs; the finding is medium when the time between runs
# is a tenth of the window or more (that much idle time is billed in cost per request).
MIN_RUN_GAP_S = 1.0
SEPARATE_RUNS_GAP_SHARE = 0.1
