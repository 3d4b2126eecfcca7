//! Domain → proto: sessions, streams and their states as the admin API shows them, routes and
//! their endpoints, and the resource names (`sessions/{session}[/streams/{stream}[/lastEventId]]`)
//! parsed back.

use std::{collections::HashMap, sync::Arc, time::Duration};

use tonic::Status;

use super::pb;
use crate::{
    config::HealthCheck,
    protocol::Era,
    proxy::route::{Endpoint, Route},
    session::{EventTracker, Session, StreamKind, UpstreamState},
};

/// A session as the API shows it, with its tracked streams oldest first.
pub fn session_to_pb(s: &Session) -> pb::Session {
    let mut streams: Vec<Arc<EventTracker>> = s.streams();
    streams.sort_by_key(|t| t.created());
    pb::Session {
        name: format!("sessions/{}", s.id()),
        upstream_session_id: String::from_utf8_lossy(s.upstream_session_id().as_bytes())
            .into_owned(),
        upstream: s.upstream().to_owned(),
        protocol_version: s.protocol_version().to_string(),
        era: era_to_pb(s.era()) as i32,
        create_time: Some(s.created().into()),
        last_activity_time: Some(s.last_activity().into()),
        state: state_of(s, &streams) as i32,
        streams: streams.iter().map(|t| stream_to_pb(s, t)).collect(),
        route: s.route().to_owned(),
        subject: s.bound_to().unwrap_or_default().to_owned(),
    }
}

/// Where a session stands: a client reading any stream makes it `STREAMING`; otherwise a stream
/// still read from the upstream makes it `LINGERING`; otherwise it is `IDLE`.
pub fn state_of(s: &Session, streams: &[Arc<EventTracker>]) -> pb::SessionState {
    if s.is_ended() {
        pb::SessionState::Ended
    } else if streams.iter().any(|t| t.client_connected()) {
        pb::SessionState::Streaming
    } else if streams.iter().any(|t| !t.upstream().is_terminal()) {
        pb::SessionState::Lingering
    } else {
        pb::SessionState::Idle
    }
}

pub fn era_to_pb(era: Era) -> pb::ProtocolEra {
    match era {
        Era::Legacy => pb::ProtocolEra::Legacy,
        Era::Modern => pb::ProtocolEra::Modern,
    }
}

fn stream_to_pb(s: &Session, t: &EventTracker) -> pb::Stream {
    pb::Stream {
        name: format!("sessions/{}/streams/{}", s.id(), t.stream()),
        kind: match t.kind() {
            StreamKind::Post => pb::StreamKind::Post,
            StreamKind::Get => pb::StreamKind::Get,
        } as i32,
        create_time: Some(t.created().into()),
        events_forwarded: t.events_forwarded(),
        duplicates_dropped: t.duplicates_dropped(),
        client_connected: t.client_connected(),
        upstream_state: upstream_state_to_pb(t.upstream()) as i32,
        replay_window_bytes: t.window_bytes() as u64,
        last_client_event_id: t.last_event_ids().client_event_id.unwrap_or_default(),
    }
}

fn upstream_state_to_pb(state: UpstreamState) -> pb::UpstreamState {
    match state {
        UpstreamState::Live => pb::UpstreamState::Live,
        UpstreamState::Reconnecting => pb::UpstreamState::Reconnecting,
        UpstreamState::Complete => pb::UpstreamState::Complete,
        UpstreamState::Failed => pb::UpstreamState::Failed,
        UpstreamState::Stopped => pb::UpstreamState::Stopped,
    }
}

/// A duration as the API carries it (`None` past what `google.protobuf.Duration` holds).
fn duration(d: Duration) -> Option<prost_types::Duration> {
    prost_types::Duration::try_from(d).ok()
}

/// A route of generation `generation` as the API shows it, with its effective settings.
pub fn route_to_pb(route: &Route, generation: u64) -> pb::Route {
    let config = route.config();
    let pool = route.pool();
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let checks = config.health_check != HealthCheck::None;
    pb::Route {
        name: route.name().to_string(),
        path: route.path().to_owned(),
        generation,
        endpoint_count: count(pool.len()),
        available_endpoint_count: count(pool.iter().filter(|e| e.is_available()).count()),
        retired_endpoint_count: count(route.endpoints().len() - pool.len()),
        response_timeout: duration(config.upstream_response_timeout),
        connect_timeout: duration(config.upstream_connect_timeout),
        health_check: match config.health_check {
            HealthCheck::None => pb::HealthCheckKind::None,
            HealthCheck::Ping => pb::HealthCheckKind::Ping,
            HealthCheck::Http => pb::HealthCheckKind::Http,
        } as i32,
        health_check_interval: checks
            .then(|| duration(config.health_check_interval))
            .flatten(),
        health_check_path: config.health_check_path.clone(),
        eject_after_failures: config.eject_after_failures,
        base_ejection_time: duration(config.base_ejection_time),
        max_ejection_time: duration(config.max_ejection_time),
    }
}

/// Live sessions per pinned endpoint: endpoint URL → route name → count. A session of no route
/// (restored from a record written before routes existed) is under the empty name.
pub type PinnedSessions = HashMap<Arc<str>, HashMap<Arc<str>, u64>>;

/// Counts the live `sessions` per endpoint they are pinned to.
pub fn pinned_sessions(sessions: &[Arc<Session>]) -> PinnedSessions {
    let mut pinned = PinnedSessions::new();
    for s in sessions.iter().filter(|s| !s.is_ended()) {
        *pinned
            .entry(Arc::from(s.upstream()))
            .or_default()
            .entry(Arc::from(s.route()))
            .or_default() += 1;
    }
    pinned
}

/// An endpoint as the API shows it; its pinned sessions are those of its route and those of no
/// route with its URL.
pub fn endpoint_to_pb(endpoint: &Endpoint, pinned: &PinnedSessions) -> pb::Endpoint {
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let route = endpoint.route();
    let sessions_pinned = pinned.get(&**endpoint.url()).map_or(0, |by_route| {
        [&*route, ""]
            .iter()
            .filter_map(|route| by_route.get(*route))
            .sum()
    });
    let ejected_for = endpoint.ejected_for();
    pb::Endpoint {
        route: endpoint.route().to_string(),
        url: endpoint.url().to_string(),
        weight: endpoint.weight(),
        health: if ejected_for.is_some() {
            pb::EndpointHealth::Ejected
        } else {
            pb::EndpointHealth::Healthy
        } as i32,
        drained: endpoint.is_drained(),
        retired: endpoint.is_retired(),
        ejected_remaining: ejected_for.and_then(duration),
        consecutive_failures: endpoint.consecutive_failures(),
        outstanding_requests: endpoint.outstanding() as u64,
        ejections: u64::from(endpoint.ejections()),
        requests: load(&endpoint.requests),
        failures: load(&endpoint.failures),
        retries: load(&endpoint.retried),
        sessions_lost: load(&endpoint.sessions_lost),
        sessions_pinned,
    }
}

/// Splits a resource name by its pattern (`*` = one non-empty segment) and returns the
/// segments the wildcards matched; INVALID_ARGUMENT names the expected pattern.
pub fn parse_name<'a>(name: &'a str, shape: &[&str]) -> Result<Vec<&'a str>, Status> {
    let parts: Vec<&str> = name.split('/').collect();
    let ok = parts.len() == shape.len()
        && parts
            .iter()
            .zip(shape)
            .all(|(p, s)| if *s == "*" { !p.is_empty() } else { p == s });
    if !ok {
        return Err(Status::invalid_argument(format!(
            "name {name:?} must look like {:?}",
            shape.join("/")
        )));
    }
    Ok(parts
        .iter()
        .zip(shape)
        .filter(|(_, s)| **s == "*")
        .map(|(p, _)| *p)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_match_their_pattern() {
        assert_eq!(
            parse_name("sessions/abc", &["sessions", "*"]).unwrap(),
            ["abc"]
        );
        assert!(parse_name("sessions/", &["sessions", "*"]).is_err());
        assert!(parse_name("session/abc", &["sessions", "*"]).is_err());
        let shape = ["sessions", "*", "streams", "*", "lastEventId"];
        assert_eq!(
            parse_name("sessions/a/streams/b/lastEventId", &shape).unwrap(),
            ["a", "b"]
        );
        assert!(parse_name("sessions/a/streams/b", &shape).is_err());
    }
}
