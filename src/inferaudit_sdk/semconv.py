"""The span contract: every attribute, event and metric name InferAudit writes or reads.

Defined once here and imported by the SDK, the collector and the analyzer, so a name can never
drift between the side that writes it and the side that reads it. Pure constants: this module
imports nothing, so the analyzer and collector can depend on it without pulling the SDK in.

Standard names follow the OpenTelemetry GenAI semantic conventions (v1.41) and the hardware
conventions (``hw.*``). What those lack lives under ``inferaudit.*``; units are in the name
(``_ns``, ``_bytes``, ``_j``, ``_w``, ``_ratio`` 0-1) so no reader has to guess them.
docs/semantic-conventions.md is the prose version of this file.
"""

# Bump on any incompatible change to the names or meanings below. "2": batch spans name their
# model and operation inferaudit.batch.model / .operation (no gen_ai.* names, no provider);
# hw.gpu.memory.utilization is memory in use (NVML's memory-busy fraction has its own name).
SCHEMA_VERSION = "2"
INSTRUMENTATION_NAME = "inferaudit_sdk"

# --------------------------------------------------------------------------------------------
# OpenTelemetry GenAI semantic conventions v1.41 (span attributes)
# --------------------------------------------------------------------------------------------
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_RESPONSE_ID = "gen_ai.response.id"
GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
# s (double): a streamed response's first chunk, from the request's start (v1.41)
GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK = "gen_ai.response.time_to_first_chunk"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_STREAM = "gen_ai.request.stream"
# Sequences asked for per request: the analyzer turns summed tokens into per-sequence TPOT
GEN_AI_REQUEST_CHOICE_COUNT = "gen_ai.request.choice.count"
GEN_AI_REQUEST_TEMPERATURE = "gen_ai.request.temperature"
GEN_AI_TOKEN_TYPE = "gen_ai.token.type"  # metric attribute: "input" | "output"
GEN_AI_INPUT_MESSAGES = "gen_ai.input.messages"  # opt-in content only
GEN_AI_OUTPUT_MESSAGES = "gen_ai.output.messages"  # opt-in content only
GEN_AI_SYSTEM_INSTRUCTIONS = "gen_ai.system_instructions"  # opt-in content only (never written)
# Tool content the GenAI conventions mark sensitive (opt-in, never written by the SDK):
# record() drops them while content capture is off.
GEN_AI_TOOL_CALL_ARGUMENTS = "gen_ai.tool.call.arguments"
GEN_AI_TOOL_CALL_RESULT = "gen_ai.tool.call.result"
GEN_AI_TOOL_DEFINITIONS = "gen_ai.tool.definitions"
GEN_AI_TOOL_DESCRIPTION = "gen_ai.tool.description"
# Older content spellings (OpenLLMetry's gen_ai.prompt.N.content, ...): record() drops extras
# under these (and their ".*" children) while content capture is off.
LEGACY_GEN_AI_PROMPT = "gen_ai.prompt"
LEGACY_GEN_AI_COMPLETION = "gen_ai.completion"
ERROR_TYPE = "error.type"
# The standard `exception` span event (message/stacktrace text only with content capture on)
EXCEPTION_EVENT = "exception"
EXCEPTION_TYPE = "exception.type"
EXCEPTION_MESSAGE = "exception.message"
EXCEPTION_STACKTRACE = "exception.stacktrace"
EXCEPTION_ESCAPED = "exception.escaped"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"

# Well-known values of gen_ai.operation.name
OPERATION_CHAT = "chat"
OPERATION_TEXT_COMPLETION = "text_completion"
OPERATION_GENERATE_CONTENT = "generate_content"
OPERATION_EMBEDDINGS = "embeddings"
TOKEN_TYPE_INPUT = "input"
TOKEN_TYPE_OUTPUT = "output"

# Older or vendor spellings the analyzer also reads (never written by the SDK).
LEGACY_GEN_AI_SYSTEM = "gen_ai.system"
LEGACY_USAGE_PROMPT_TOKENS = "gen_ai.usage.prompt_tokens"
LEGACY_USAGE_COMPLETION_TOKENS = "gen_ai.usage.completion_tokens"
LEGACY_LLM_USAGE_PROMPT_TOKENS = "llm.usage.prompt_tokens"  # OpenLLMetry < 0.40
LEGACY_LLM_USAGE_COMPLETION_TOKENS = "llm.usage.completion_tokens"
LEGACY_LLM_REQUEST_TYPE = "llm.request.type"
# vLLM's own OTel request spans (seconds, doubles)
VLLM_LATENCY_TIME_TO_FIRST_TOKEN = "gen_ai.latency.time_to_first_token"
VLLM_LATENCY_E2E = "gen_ai.latency.e2e"
VLLM_LATENCY_TIME_IN_QUEUE = "gen_ai.latency.time_in_queue"
VLLM_LATENCY_TIME_IN_MODEL_PREFILL = "gen_ai.latency.time_in_model_prefill"
VLLM_LATENCY_TIME_IN_MODEL_DECODE = "gen_ai.latency.time_in_model_decode"
VLLM_LATENCY_TIME_IN_MODEL_FORWARD = "gen_ai.latency.time_in_model_forward"
VLLM_REQUEST_N = "gen_ai.request.n"
# vLLM V0: the sequences whose output tokens its request span sums (best_of included)
VLLM_USAGE_NUM_SEQUENCES = "gen_ai.usage.num_sequences"
VLLM_REQUEST_ID = "gen_ai.request.id"
VLLM_LATENCY_TIME_IN_MODEL_INFERENCE = "gen_ai.latency.time_in_model_inference"
VLLM_LATENCY_TIME_IN_MODEL_EXECUTE = "gen_ai.latency.time_in_model_execute"
# OpenLIT (seconds, doubles) and OpenLLMetry spellings the analyzer also reads
OPENLIT_SERVER_TTFT = "gen_ai.server.ttft"
OPENLIT_SERVER_TBT = "gen_ai.server.tbt"
OPENLIT_SERVER_TIME_TO_FIRST_TOKEN = "gen_ai.server.time_to_first_token"
OPENLIT_SERVER_TIME_PER_OUTPUT_TOKEN = "gen_ai.server.time_per_output_token"
OPENLIT_REQUEST_IS_STREAM = "gen_ai.request.is_stream"
LEGACY_LLM_IS_STREAMING = "llm.is_streaming"
LEGACY_USAGE_CACHE_READ_INPUT_TOKENS = "gen_ai.usage.cache_read_input_tokens"

# --------------------------------------------------------------------------------------------
# GenAI metrics (histograms) and the spec's explicit bucket boundaries
# --------------------------------------------------------------------------------------------
METRIC_SERVER_REQUEST_DURATION = "gen_ai.server.request.duration"  # s
METRIC_SERVER_TIME_TO_FIRST_TOKEN = "gen_ai.server.time_to_first_token"  # s
METRIC_SERVER_TIME_PER_OUTPUT_TOKEN = "gen_ai.server.time_per_output_token"  # s
METRIC_CLIENT_TOKEN_USAGE = "gen_ai.client.token.usage"  # {token}
METRIC_CLIENT_OPERATION_DURATION = "gen_ai.client.operation.duration"  # s

BUCKETS_REQUEST_DURATION_S = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)
BUCKETS_TIME_TO_FIRST_TOKEN_S = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)
BUCKETS_TIME_PER_OUTPUT_TOKEN_S = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
)
BUCKETS_TOKEN_USAGE = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)

# --------------------------------------------------------------------------------------------
# Hardware semantic conventions (hw.*): metrics and their attributes
# --------------------------------------------------------------------------------------------
HW_ID = "hw.id"  # a GPU's UUID, NVML's spelling "GPU-...": on NVML points and batch spans
HW_VENDOR = "hw.vendor"
HW_MODEL = "hw.model"
HW_TYPE = "hw.type"  # "gpu"
HW_GPU_TASK = "hw.gpu.task"  # "general" | "encoder" | "decoder"
NETWORK_IO_DIRECTION = "network.io.direction"  # "receive" | "transmit"
METRIC_HW_GPU_UTILIZATION = "hw.gpu.utilization"  # ratio 0-1
METRIC_HW_GPU_MEMORY_USAGE = "hw.gpu.memory.usage"  # By
METRIC_HW_GPU_MEMORY_LIMIT = "hw.gpu.memory.limit"  # By
METRIC_HW_GPU_MEMORY_UTILIZATION = "hw.gpu.memory.utilization"  # ratio 0-1 of memory in use
METRIC_HW_GPU_IO = "hw.gpu.io"  # By, counter, with network.io.direction
METRIC_HW_POWER = "hw.power"  # W
METRIC_HW_ENERGY = "hw.energy"  # J, counter

# --------------------------------------------------------------------------------------------
# Resource attributes (standard, then ours)
# --------------------------------------------------------------------------------------------
SERVICE_NAME = "service.name"
HOST_NAME = "host.name"
HOST_ARCH = "host.arch"
HOST_TYPE = "host.type"  # cloud instance type, e.g. "g5.xlarge"
HOST_CPU_MODEL_NAME = "host.cpu.model.name"
CLOUD_PROVIDER = "cloud.provider"
CLOUD_REGION = "cloud.region"
RES_HOST_CPU_CORES = "inferaudit.host.cpu.cores"
RES_GPU_MODEL = "inferaudit.gpu.model"  # e.g. "NVIDIA H100 80GB HBM3"
RES_GPU_COUNT = "inferaudit.gpu.count"
RES_PRICE_USD_PER_HOUR = "inferaudit.price.usd_per_hour"  # optional, user-given
RES_SCHEMA_VERSION = "inferaudit.schema.version"

# --------------------------------------------------------------------------------------------
# inferaudit.* span attributes: what the conventions lack
# --------------------------------------------------------------------------------------------
SCHEMA_VERSION_ATTR = "inferaudit.schema.version"
# Role of a span in the audit: a request a client waits on, or a model call (batch) on a device.
SPAN_ROLE = "inferaudit.span.role"
ROLE_REQUEST = "request"
ROLE_BATCH = "batch"

# Batching
BATCH_SIZE = "inferaudit.batch.size"  # requests in this model call
# The model and operation a batch ran. Not the gen_ai.* names: a backend that classifies spans
# by gen_ai.operation.name would count every model call as one more (token-less) inference
# request beside the requests themselves.
BATCH_MODEL = "inferaudit.batch.model"
BATCH_OPERATION = "inferaudit.batch.operation"
BATCH_INPUT_TOKENS = "inferaudit.batch.input_tokens"  # real (unpadded) input tokens
BATCH_PADDED_TOKENS = "inferaudit.batch.padded_tokens"  # tokens in the padded input tensor
BATCH_PADDING_RATIO = "inferaudit.batch.padding_ratio"  # 1 - real/padded, 0-1
BATCH_OUTPUT_TOKENS = "inferaudit.batch.output_tokens"

# Request timing (also exported as GenAI metrics; here on the span itself, in ns)
REQUEST_QUEUE_TIME_NS = "inferaudit.request.queue_time_ns"
REQUEST_TIME_TO_FIRST_TOKEN_NS = "inferaudit.request.time_to_first_token_ns"
REQUEST_TIME_PER_OUTPUT_TOKEN_NS = "inferaudit.request.time_per_output_token_ns"
REQUEST_STREAM_CHUNKS = "inferaudit.request.stream_chunks"

# Prompt fingerprints (content never leaves the process by default)
PROMPT_FINGERPRINT = "inferaudit.prompt.fingerprint"  # keyed BLAKE2b-128 of the prompt, hex
PROMPT_SIMHASH = "inferaudit.prompt.simhash"  # 64-bit SimHash over token shingles, 16 hex chars
PROMPT_FINGERPRINT_KEY_ID = "inferaudit.prompt.fingerprint_key_id"  # compare only equal key ids
PROMPT_FINGERPRINT_BASIS = "inferaudit.prompt.fingerprint_basis"  # "token_ids" | "text"

# Caching and routing
CACHE_HIT = "inferaudit.cache.hit"  # bool: served from a response/prompt cache
ROUTE = "inferaudit.route"  # logical route / endpoint, e.g. "/v1/chat"
MODEL_TIER = "inferaudit.model.tier"  # e.g. "large" | "small"

# Device work of a model call
DEVICE_TYPE = "inferaudit.device.type"  # "cuda" | "cpu" | "rocm"
DEVICE_ID = "inferaudit.device.id"  # CUDA index in the process (hw.id: which GPU)
DEVICE_TIME_NS = "inferaudit.device.time_ns"  # time the device spent on this call
DEVICE_CPU_TIME_NS = "inferaudit.device.cpu_time_ns"  # process CPU time (CPU fallback)
DEVICE_WALL_TIME_NS = "inferaudit.device.wall_time_ns"  # host wall time of the model call
DEVICE_STREAMS = "inferaudit.device.streams"  # distinct streams that ran work
DEVICE_CPU_THREADS = "inferaudit.device.cpu_threads"  # CPU fallback: intra-op threads (capacity)
DEVICE_RESOLVE_WAIT_NS = "inferaudit.device.resolve_wait_ns"  # span end waited on the device
DEVICE_CALLS = "inferaudit.device.calls"  # instrumented model calls summed into this span

# Host<->device copies
COPY_H2D_BYTES = "inferaudit.copy.h2d.bytes"
COPY_D2H_BYTES = "inferaudit.copy.d2h.bytes"
COPY_H2D_TIME_NS = "inferaudit.copy.h2d.time_ns"
COPY_D2H_TIME_NS = "inferaudit.copy.d2h.time_ns"
COPY_PAGEABLE_BYTES = "inferaudit.copy.pageable.bytes"  # host side not pinned: synchronous
COPY_COUNT = "inferaudit.copy.count"

# GPU counters aggregated over the span's window (from the NVML sampler)
GPU_UTILIZATION_RATIO = "inferaudit.gpu.utilization_ratio"  # mean SM-busy, 0-1
GPU_MEMORY_UTILIZATION_RATIO = "inferaudit.gpu.memory_utilization_ratio"  # mem controller, 0-1
GPU_ENERGY_J = "inferaudit.gpu.energy_j"
GPU_POWER_W = "inferaudit.gpu.power_w"  # mean: energy / window where the counter exists
GPU_PCIE_TX_BYTES = "inferaudit.gpu.pcie.tx_bytes"
GPU_PCIE_RX_BYTES = "inferaudit.gpu.pcie.rx_bytes"
GPU_SM_CLOCK_MHZ = "inferaudit.gpu.sm_clock_mhz"
GPU_MEMORY_USED_BYTES = "inferaudit.gpu.memory_used_bytes"  # max over the window
GPU_THROTTLE_REASONS = "inferaudit.gpu.throttle_reasons"  # bitmask, OR over the window
GPU_SAMPLES = "inferaudit.gpu.samples"  # NVML samples the aggregate is over

# Kernel-level sampling (torch.profiler, 1 in N calls)
PROFILE_TRACE_PATH = "inferaudit.profile.trace_path"  # Kineto JSON, relative to the trace dir
# true on a batch span whose call ran under the profiler, written on the call's path: its
# latency pays the profiler even where the trace could not be written (no trace_path then)
PROFILE_SAMPLED = "inferaudit.profile.sampled"
EVENT_PROFILE_SUMMARY = "inferaudit.profile.summary"
PROFILE_KERNEL_COUNT = "inferaudit.profile.kernel_count"
PROFILE_KERNEL_TIME_NS = "inferaudit.profile.kernel_time_ns"
PROFILE_TOP_KERNELS = "inferaudit.profile.top_kernels"  # string[]: "name:ns"
PROFILE_LAUNCH_GAP_NS = "inferaudit.profile.launch_gap_ns"  # summed idle gaps between kernels
PROFILE_GRAPH_LAUNCHES = "inferaudit.profile.graph_launches"
PROFILE_COPY_COUNT = "inferaudit.profile.copy_count"
PROFILE_BASIS = "inferaudit.profile.basis"  # "kernel" (GPU) | "cpu_op" (CPU only)

# Content capture (only with OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT)
CONTENT_TRUNCATED = "inferaudit.content.truncated"

# --------------------------------------------------------------------------------------------
# inferaudit.* metrics
# --------------------------------------------------------------------------------------------
METRIC_SDK_ERRORS = "inferaudit.sdk.errors"  # counter: instrumentation faults swallowed
METRIC_SDK_SPANS_DROPPED = "inferaudit.sdk.spans.dropped"  # counter: spans lost before export
METRIC_SDK_SPANS_EXPORTED = "inferaudit.sdk.spans.exported"  # counter
SDK_EXPORTER = "inferaudit.exporter"  # attribute on spans.dropped/exported: "file", "otlp", ...
SDK_DROP_REASON = "inferaudit.drop.reason"  # attribute on spans.dropped
DROP_REASON_QUEUE_FULL = "queue_full"
DROP_REASON_EXPORT_FAILED = "export_failed"
DROP_REASON_SHUTDOWN = "shutdown"
METRIC_GPU_SM_CLOCK = "inferaudit.gpu.sm_clock"  # MHz gauge
# ratio 0-1 of time device memory was read or written (NVML's "memory" utilisation); the hw.*
# conventions' memory utilisation is the fraction of memory in use, a different quantity
METRIC_GPU_MEMORY_CONTROLLER_UTILIZATION = "inferaudit.gpu.memory_controller.utilization"
METRIC_GPU_THROTTLE_REASONS = "inferaudit.gpu.throttle_reasons"  # bitmask gauge
METRIC_DEVICE_TIME = "inferaudit.device.time"  # s histogram per model call
ERROR_COMPONENT = "inferaudit.component"  # attribute on METRIC_SDK_ERRORS

# --------------------------------------------------------------------------------------------
# Environment variables
# --------------------------------------------------------------------------------------------
ENV_CAPTURE_MESSAGE_CONTENT = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
