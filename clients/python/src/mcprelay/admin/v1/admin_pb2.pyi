import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProtocolEra(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROTOCOL_ERA_UNSPECIFIED: _ClassVar[ProtocolEra]
    PROTOCOL_ERA_LEGACY: _ClassVar[ProtocolEra]
    PROTOCOL_ERA_MODERN: _ClassVar[ProtocolEra]

class SessionState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SESSION_STATE_UNSPECIFIED: _ClassVar[SessionState]
    SESSION_STATE_IDLE: _ClassVar[SessionState]
    SESSION_STATE_STREAMING: _ClassVar[SessionState]
    SESSION_STATE_LINGERING: _ClassVar[SessionState]
    SESSION_STATE_ENDED: _ClassVar[SessionState]

class StreamKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STREAM_KIND_UNSPECIFIED: _ClassVar[StreamKind]
    STREAM_KIND_POST: _ClassVar[StreamKind]
    STREAM_KIND_GET: _ClassVar[StreamKind]

class UpstreamState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UPSTREAM_STATE_UNSPECIFIED: _ClassVar[UpstreamState]
    UPSTREAM_STATE_LIVE: _ClassVar[UpstreamState]
    UPSTREAM_STATE_RECONNECTING: _ClassVar[UpstreamState]
    UPSTREAM_STATE_COMPLETE: _ClassVar[UpstreamState]
    UPSTREAM_STATE_FAILED: _ClassVar[UpstreamState]
    UPSTREAM_STATE_STOPPED: _ClassVar[UpstreamState]

class SessionChangeType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SESSION_CHANGE_TYPE_UNSPECIFIED: _ClassVar[SessionChangeType]
    SESSION_CHANGE_TYPE_EXISTING: _ClassVar[SessionChangeType]
    SESSION_CHANGE_TYPE_SYNCED: _ClassVar[SessionChangeType]
    SESSION_CHANGE_TYPE_CREATED: _ClassVar[SessionChangeType]
    SESSION_CHANGE_TYPE_UPDATED: _ClassVar[SessionChangeType]
    SESSION_CHANGE_TYPE_ENDED: _ClassVar[SessionChangeType]
    SESSION_CHANGE_TYPE_RESET: _ClassVar[SessionChangeType]

class HealthCheckKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HEALTH_CHECK_KIND_UNSPECIFIED: _ClassVar[HealthCheckKind]
    HEALTH_CHECK_KIND_NONE: _ClassVar[HealthCheckKind]
    HEALTH_CHECK_KIND_PING: _ClassVar[HealthCheckKind]
    HEALTH_CHECK_KIND_HTTP: _ClassVar[HealthCheckKind]

class EndpointHealth(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENDPOINT_HEALTH_UNSPECIFIED: _ClassVar[EndpointHealth]
    ENDPOINT_HEALTH_HEALTHY: _ClassVar[EndpointHealth]
    ENDPOINT_HEALTH_EJECTED: _ClassVar[EndpointHealth]
PROTOCOL_ERA_UNSPECIFIED: ProtocolEra
PROTOCOL_ERA_LEGACY: ProtocolEra
PROTOCOL_ERA_MODERN: ProtocolEra
SESSION_STATE_UNSPECIFIED: SessionState
SESSION_STATE_IDLE: SessionState
SESSION_STATE_STREAMING: SessionState
SESSION_STATE_LINGERING: SessionState
SESSION_STATE_ENDED: SessionState
STREAM_KIND_UNSPECIFIED: StreamKind
STREAM_KIND_POST: StreamKind
STREAM_KIND_GET: StreamKind
UPSTREAM_STATE_UNSPECIFIED: UpstreamState
UPSTREAM_STATE_LIVE: UpstreamState
UPSTREAM_STATE_RECONNECTING: UpstreamState
UPSTREAM_STATE_COMPLETE: UpstreamState
UPSTREAM_STATE_FAILED: UpstreamState
UPSTREAM_STATE_STOPPED: UpstreamState
SESSION_CHANGE_TYPE_UNSPECIFIED: SessionChangeType
SESSION_CHANGE_TYPE_EXISTING: SessionChangeType
SESSION_CHANGE_TYPE_SYNCED: SessionChangeType
SESSION_CHANGE_TYPE_CREATED: SessionChangeType
SESSION_CHANGE_TYPE_UPDATED: SessionChangeType
SESSION_CHANGE_TYPE_ENDED: SessionChangeType
SESSION_CHANGE_TYPE_RESET: SessionChangeType
HEALTH_CHECK_KIND_UNSPECIFIED: HealthCheckKind
HEALTH_CHECK_KIND_NONE: HealthCheckKind
HEALTH_CHECK_KIND_PING: HealthCheckKind
HEALTH_CHECK_KIND_HTTP: HealthCheckKind
ENDPOINT_HEALTH_UNSPECIFIED: EndpointHealth
ENDPOINT_HEALTH_HEALTHY: EndpointHealth
ENDPOINT_HEALTH_EJECTED: EndpointHealth

class Session(_message.Message):
    __slots__ = ("name", "upstream_session_id", "upstream", "protocol_version", "era", "create_time", "last_activity_time", "streams", "state", "route", "subject")
    NAME_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ERA_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_ACTIVITY_TIME_FIELD_NUMBER: _ClassVar[int]
    STREAMS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    name: str
    upstream_session_id: str
    upstream: str
    protocol_version: str
    era: ProtocolEra
    create_time: _timestamp_pb2.Timestamp
    last_activity_time: _timestamp_pb2.Timestamp
    streams: _containers.RepeatedCompositeFieldContainer[Stream]
    state: SessionState
    route: str
    subject: str
    def __init__(self, name: _Optional[str] = ..., upstream_session_id: _Optional[str] = ..., upstream: _Optional[str] = ..., protocol_version: _Optional[str] = ..., era: _Optional[_Union[ProtocolEra, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_activity_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., streams: _Optional[_Iterable[_Union[Stream, _Mapping]]] = ..., state: _Optional[_Union[SessionState, str]] = ..., route: _Optional[str] = ..., subject: _Optional[str] = ...) -> None: ...

class Stream(_message.Message):
    __slots__ = ("name", "kind", "create_time", "events_forwarded", "duplicates_dropped", "client_connected", "upstream_state", "replay_window_bytes", "last_client_event_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FORWARDED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_DROPPED_FIELD_NUMBER: _ClassVar[int]
    CLIENT_CONNECTED_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_STATE_FIELD_NUMBER: _ClassVar[int]
    REPLAY_WINDOW_BYTES_FIELD_NUMBER: _ClassVar[int]
    LAST_CLIENT_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: StreamKind
    create_time: _timestamp_pb2.Timestamp
    events_forwarded: int
    duplicates_dropped: int
    client_connected: bool
    upstream_state: UpstreamState
    replay_window_bytes: int
    last_client_event_id: str
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[StreamKind, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., events_forwarded: _Optional[int] = ..., duplicates_dropped: _Optional[int] = ..., client_connected: _Optional[bool] = ..., upstream_state: _Optional[_Union[UpstreamState, str]] = ..., replay_window_bytes: _Optional[int] = ..., last_client_event_id: _Optional[str] = ...) -> None: ...

class ListSessionsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "filter")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    filter: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., filter: _Optional[str] = ...) -> None: ...

class ListSessionsResponse(_message.Message):
    __slots__ = ("sessions", "next_page_token")
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[Session]
    next_page_token: str
    def __init__(self, sessions: _Optional[_Iterable[_Union[Session, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetSessionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetLastEventIdRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class LastEventId(_message.Message):
    __slots__ = ("name", "client_event_id", "upstream_event_id", "persisted_upstream_event_id", "persist_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CLIENT_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    PERSISTED_UPSTREAM_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    PERSIST_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    client_event_id: str
    upstream_event_id: str
    persisted_upstream_event_id: str
    persist_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., client_event_id: _Optional[str] = ..., upstream_event_id: _Optional[str] = ..., persisted_upstream_event_id: _Optional[str] = ..., persist_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ForceReplayRequest(_message.Message):
    __slots__ = ("name", "after_event_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    AFTER_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    after_event_id: str
    def __init__(self, name: _Optional[str] = ..., after_event_id: _Optional[str] = ...) -> None: ...

class ForceReplayResponse(_message.Message):
    __slots__ = ("events_replayed",)
    EVENTS_REPLAYED_FIELD_NUMBER: _ClassVar[int]
    events_replayed: int
    def __init__(self, events_replayed: _Optional[int] = ...) -> None: ...

class TerminateSessionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class TerminateSessionResponse(_message.Message):
    __slots__ = ("session", "upstream_status", "upstream_error")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_STATUS_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_ERROR_FIELD_NUMBER: _ClassVar[int]
    session: Session
    upstream_status: int
    upstream_error: str
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ..., upstream_status: _Optional[int] = ..., upstream_error: _Optional[str] = ...) -> None: ...

class WatchSessionsRequest(_message.Message):
    __slots__ = ("filter",)
    FILTER_FIELD_NUMBER: _ClassVar[int]
    filter: str
    def __init__(self, filter: _Optional[str] = ...) -> None: ...

class WatchSessionsResponse(_message.Message):
    __slots__ = ("change_type", "session", "change_time", "missed_changes")
    CHANGE_TYPE_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    CHANGE_TIME_FIELD_NUMBER: _ClassVar[int]
    MISSED_CHANGES_FIELD_NUMBER: _ClassVar[int]
    change_type: SessionChangeType
    session: Session
    change_time: _timestamp_pb2.Timestamp
    missed_changes: int
    def __init__(self, change_type: _Optional[_Union[SessionChangeType, str]] = ..., session: _Optional[_Union[Session, _Mapping]] = ..., change_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., missed_changes: _Optional[int] = ...) -> None: ...

class GetMetricsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WatchMetricsRequest(_message.Message):
    __slots__ = ("interval",)
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    interval: _duration_pb2.Duration
    def __init__(self, interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class WatchMetricsResponse(_message.Message):
    __slots__ = ("snapshot", "skipped_snapshots", "events_per_second")
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_SNAPSHOTS_FIELD_NUMBER: _ClassVar[int]
    EVENTS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    snapshot: MetricsSnapshot
    skipped_snapshots: int
    events_per_second: float
    def __init__(self, snapshot: _Optional[_Union[MetricsSnapshot, _Mapping]] = ..., skipped_snapshots: _Optional[int] = ..., events_per_second: _Optional[float] = ...) -> None: ...

class MetricsSnapshot(_message.Message):
    __slots__ = ("observe_time", "proxy", "worker")
    OBSERVE_TIME_FIELD_NUMBER: _ClassVar[int]
    PROXY_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    observe_time: _timestamp_pb2.Timestamp
    proxy: ProxyMetrics
    worker: WorkerMetrics
    def __init__(self, observe_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., proxy: _Optional[_Union[ProxyMetrics, _Mapping]] = ..., worker: _Optional[_Union[WorkerMetrics, _Mapping]] = ...) -> None: ...

class ProxyMetrics(_message.Message):
    __slots__ = ("sessions", "streams_open", "streams_opened", "events_forwarded", "duplicates_dropped", "events_replayed", "resumptions", "resumptions_refused", "upstream_reconnects")
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    STREAMS_OPEN_FIELD_NUMBER: _ClassVar[int]
    STREAMS_OPENED_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FORWARDED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_DROPPED_FIELD_NUMBER: _ClassVar[int]
    EVENTS_REPLAYED_FIELD_NUMBER: _ClassVar[int]
    RESUMPTIONS_FIELD_NUMBER: _ClassVar[int]
    RESUMPTIONS_REFUSED_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_RECONNECTS_FIELD_NUMBER: _ClassVar[int]
    sessions: int
    streams_open: int
    streams_opened: int
    events_forwarded: int
    duplicates_dropped: int
    events_replayed: int
    resumptions: int
    resumptions_refused: int
    upstream_reconnects: int
    def __init__(self, sessions: _Optional[int] = ..., streams_open: _Optional[int] = ..., streams_opened: _Optional[int] = ..., events_forwarded: _Optional[int] = ..., duplicates_dropped: _Optional[int] = ..., events_replayed: _Optional[int] = ..., resumptions: _Optional[int] = ..., resumptions_refused: _Optional[int] = ..., upstream_reconnects: _Optional[int] = ...) -> None: ...

class WorkerMetrics(_message.Message):
    __slots__ = ("pending", "updates", "stream_writes", "session_writes", "batches", "coalesce_ratio", "last_flush_duration", "errors", "retries", "shed")
    PENDING_FIELD_NUMBER: _ClassVar[int]
    UPDATES_FIELD_NUMBER: _ClassVar[int]
    STREAM_WRITES_FIELD_NUMBER: _ClassVar[int]
    SESSION_WRITES_FIELD_NUMBER: _ClassVar[int]
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    COALESCE_RATIO_FIELD_NUMBER: _ClassVar[int]
    LAST_FLUSH_DURATION_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    SHED_FIELD_NUMBER: _ClassVar[int]
    pending: int
    updates: int
    stream_writes: int
    session_writes: int
    batches: int
    coalesce_ratio: float
    last_flush_duration: _duration_pb2.Duration
    errors: int
    retries: int
    shed: int
    def __init__(self, pending: _Optional[int] = ..., updates: _Optional[int] = ..., stream_writes: _Optional[int] = ..., session_writes: _Optional[int] = ..., batches: _Optional[int] = ..., coalesce_ratio: _Optional[float] = ..., last_flush_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., errors: _Optional[int] = ..., retries: _Optional[int] = ..., shed: _Optional[int] = ...) -> None: ...

class ListRoutesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListRoutesResponse(_message.Message):
    __slots__ = ("routes", "generation")
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    routes: _containers.RepeatedCompositeFieldContainer[Route]
    generation: int
    def __init__(self, routes: _Optional[_Iterable[_Union[Route, _Mapping]]] = ..., generation: _Optional[int] = ...) -> None: ...

class Route(_message.Message):
    __slots__ = ("name", "path", "generation", "endpoint_count", "available_endpoint_count", "retired_endpoint_count", "response_timeout", "connect_timeout", "health_check", "health_check_interval", "health_check_path", "eject_after_failures", "base_ejection_time", "max_ejection_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_COUNT_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_ENDPOINT_COUNT_FIELD_NUMBER: _ClassVar[int]
    RETIRED_ENDPOINT_COUNT_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    CONNECT_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    HEALTH_CHECK_FIELD_NUMBER: _ClassVar[int]
    HEALTH_CHECK_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    HEALTH_CHECK_PATH_FIELD_NUMBER: _ClassVar[int]
    EJECT_AFTER_FAILURES_FIELD_NUMBER: _ClassVar[int]
    BASE_EJECTION_TIME_FIELD_NUMBER: _ClassVar[int]
    MAX_EJECTION_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    path: str
    generation: int
    endpoint_count: int
    available_endpoint_count: int
    retired_endpoint_count: int
    response_timeout: _duration_pb2.Duration
    connect_timeout: _duration_pb2.Duration
    health_check: HealthCheckKind
    health_check_interval: _duration_pb2.Duration
    health_check_path: str
    eject_after_failures: int
    base_ejection_time: _duration_pb2.Duration
    max_ejection_time: _duration_pb2.Duration
    def __init__(self, name: _Optional[str] = ..., path: _Optional[str] = ..., generation: _Optional[int] = ..., endpoint_count: _Optional[int] = ..., available_endpoint_count: _Optional[int] = ..., retired_endpoint_count: _Optional[int] = ..., response_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., connect_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., health_check: _Optional[_Union[HealthCheckKind, str]] = ..., health_check_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., health_check_path: _Optional[str] = ..., eject_after_failures: _Optional[int] = ..., base_ejection_time: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_ejection_time: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class Endpoint(_message.Message):
    __slots__ = ("route", "url", "weight", "health", "drained", "retired", "ejected_remaining", "consecutive_failures", "outstanding_requests", "ejections", "requests", "failures", "retries", "sessions_lost", "sessions_pinned")
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    DRAINED_FIELD_NUMBER: _ClassVar[int]
    RETIRED_FIELD_NUMBER: _ClassVar[int]
    EJECTED_REMAINING_FIELD_NUMBER: _ClassVar[int]
    CONSECUTIVE_FAILURES_FIELD_NUMBER: _ClassVar[int]
    OUTSTANDING_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    EJECTIONS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_LOST_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_PINNED_FIELD_NUMBER: _ClassVar[int]
    route: str
    url: str
    weight: int
    health: EndpointHealth
    drained: bool
    retired: bool
    ejected_remaining: _duration_pb2.Duration
    consecutive_failures: int
    outstanding_requests: int
    ejections: int
    requests: int
    failures: int
    retries: int
    sessions_lost: int
    sessions_pinned: int
    def __init__(self, route: _Optional[str] = ..., url: _Optional[str] = ..., weight: _Optional[int] = ..., health: _Optional[_Union[EndpointHealth, str]] = ..., drained: _Optional[bool] = ..., retired: _Optional[bool] = ..., ejected_remaining: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., consecutive_failures: _Optional[int] = ..., outstanding_requests: _Optional[int] = ..., ejections: _Optional[int] = ..., requests: _Optional[int] = ..., failures: _Optional[int] = ..., retries: _Optional[int] = ..., sessions_lost: _Optional[int] = ..., sessions_pinned: _Optional[int] = ...) -> None: ...

class ListEndpointsRequest(_message.Message):
    __slots__ = ("route",)
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    route: str
    def __init__(self, route: _Optional[str] = ...) -> None: ...

class ListEndpointsResponse(_message.Message):
    __slots__ = ("endpoints", "generation")
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    endpoints: _containers.RepeatedCompositeFieldContainer[Endpoint]
    generation: int
    def __init__(self, endpoints: _Optional[_Iterable[_Union[Endpoint, _Mapping]]] = ..., generation: _Optional[int] = ...) -> None: ...

class DrainEndpointRequest(_message.Message):
    __slots__ = ("route", "url")
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    route: str
    url: str
    def __init__(self, route: _Optional[str] = ..., url: _Optional[str] = ...) -> None: ...

class UndrainEndpointRequest(_message.Message):
    __slots__ = ("route", "url")
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    route: str
    url: str
    def __init__(self, route: _Optional[str] = ..., url: _Optional[str] = ...) -> None: ...

class WatchEndpointsRequest(_message.Message):
    __slots__ = ("route",)
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    route: str
    def __init__(self, route: _Optional[str] = ...) -> None: ...

class WatchEndpointsResponse(_message.Message):
    __slots__ = ("endpoints", "generation", "observe_time")
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    OBSERVE_TIME_FIELD_NUMBER: _ClassVar[int]
    endpoints: _containers.RepeatedCompositeFieldContainer[Endpoint]
    generation: int
    observe_time: _timestamp_pb2.Timestamp
    def __init__(self, endpoints: _Optional[_Iterable[_Union[Endpoint, _Mapping]]] = ..., generation: _Optional[int] = ..., observe_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetRoutePolicyRequest(_message.Message):
    __slots__ = ("route",)
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    route: str
    def __init__(self, route: _Optional[str] = ...) -> None: ...

class RoutePolicy(_message.Message):
    __slots__ = ("route", "allow_tools", "deny_tools", "allow_resources", "deny_resources", "allow_prompts", "deny_prompts", "rate_limit", "interceptors", "cache")
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    ALLOW_TOOLS_FIELD_NUMBER: _ClassVar[int]
    DENY_TOOLS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_RESOURCES_FIELD_NUMBER: _ClassVar[int]
    DENY_RESOURCES_FIELD_NUMBER: _ClassVar[int]
    ALLOW_PROMPTS_FIELD_NUMBER: _ClassVar[int]
    DENY_PROMPTS_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMIT_FIELD_NUMBER: _ClassVar[int]
    INTERCEPTORS_FIELD_NUMBER: _ClassVar[int]
    CACHE_FIELD_NUMBER: _ClassVar[int]
    route: str
    allow_tools: _containers.RepeatedScalarFieldContainer[str]
    deny_tools: _containers.RepeatedScalarFieldContainer[str]
    allow_resources: _containers.RepeatedScalarFieldContainer[str]
    deny_resources: _containers.RepeatedScalarFieldContainer[str]
    allow_prompts: _containers.RepeatedScalarFieldContainer[str]
    deny_prompts: _containers.RepeatedScalarFieldContainer[str]
    rate_limit: RateLimits
    interceptors: _containers.RepeatedCompositeFieldContainer[InterceptorDecisions]
    cache: CacheState
    def __init__(self, route: _Optional[str] = ..., allow_tools: _Optional[_Iterable[str]] = ..., deny_tools: _Optional[_Iterable[str]] = ..., allow_resources: _Optional[_Iterable[str]] = ..., deny_resources: _Optional[_Iterable[str]] = ..., allow_prompts: _Optional[_Iterable[str]] = ..., deny_prompts: _Optional[_Iterable[str]] = ..., rate_limit: _Optional[_Union[RateLimits, _Mapping]] = ..., interceptors: _Optional[_Iterable[_Union[InterceptorDecisions, _Mapping]]] = ..., cache: _Optional[_Union[CacheState, _Mapping]] = ...) -> None: ...

class CacheState(_message.Message):
    __slots__ = ("max_entries", "max_bytes", "max_ttl", "entries", "bytes", "hits", "misses", "stores", "evictions", "invalidations")
    MAX_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_TTL_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    MISSES_FIELD_NUMBER: _ClassVar[int]
    STORES_FIELD_NUMBER: _ClassVar[int]
    EVICTIONS_FIELD_NUMBER: _ClassVar[int]
    INVALIDATIONS_FIELD_NUMBER: _ClassVar[int]
    max_entries: int
    max_bytes: int
    max_ttl: _duration_pb2.Duration
    entries: int
    bytes: int
    hits: int
    misses: int
    stores: int
    evictions: int
    invalidations: int
    def __init__(self, max_entries: _Optional[int] = ..., max_bytes: _Optional[int] = ..., max_ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., entries: _Optional[int] = ..., bytes: _Optional[int] = ..., hits: _Optional[int] = ..., misses: _Optional[int] = ..., stores: _Optional[int] = ..., evictions: _Optional[int] = ..., invalidations: _Optional[int] = ...) -> None: ...

class InvalidateCacheRequest(_message.Message):
    __slots__ = ("route",)
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    route: str
    def __init__(self, route: _Optional[str] = ...) -> None: ...

class InvalidateCacheResponse(_message.Message):
    __slots__ = ("invalidated",)
    INVALIDATED_FIELD_NUMBER: _ClassVar[int]
    invalidated: int
    def __init__(self, invalidated: _Optional[int] = ...) -> None: ...

class RateLimits(_message.Message):
    __slots__ = ("client_requests_per_second", "client_burst", "route_requests_per_second", "route_burst", "tools", "max_clients", "client_buckets")
    CLIENT_REQUESTS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    CLIENT_BURST_FIELD_NUMBER: _ClassVar[int]
    ROUTE_REQUESTS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    ROUTE_BURST_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    MAX_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_BUCKETS_FIELD_NUMBER: _ClassVar[int]
    client_requests_per_second: int
    client_burst: int
    route_requests_per_second: int
    route_burst: int
    tools: _containers.RepeatedCompositeFieldContainer[ToolRateLimit]
    max_clients: int
    client_buckets: int
    def __init__(self, client_requests_per_second: _Optional[int] = ..., client_burst: _Optional[int] = ..., route_requests_per_second: _Optional[int] = ..., route_burst: _Optional[int] = ..., tools: _Optional[_Iterable[_Union[ToolRateLimit, _Mapping]]] = ..., max_clients: _Optional[int] = ..., client_buckets: _Optional[int] = ...) -> None: ...

class ToolRateLimit(_message.Message):
    __slots__ = ("name", "requests_per_second", "burst")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    BURST_FIELD_NUMBER: _ClassVar[int]
    name: str
    requests_per_second: int
    burst: int
    def __init__(self, name: _Optional[str] = ..., requests_per_second: _Optional[int] = ..., burst: _Optional[int] = ...) -> None: ...

class InterceptorDecisions(_message.Message):
    __slots__ = ("name", "passed", "changed", "answered", "dropped")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    name: str
    passed: int
    changed: int
    answered: int
    dropped: int
    def __init__(self, name: _Optional[str] = ..., passed: _Optional[int] = ..., changed: _Optional[int] = ..., answered: _Optional[int] = ..., dropped: _Optional[int] = ...) -> None: ...
