//! The Redis store: sessions outlive the process and are shared by every replica pointed at the
//! same Redis (and key prefix). Redis is the distributed engine; the proxy adds no replication
//! of its own.
//!
//! Keys (all under the configured prefix `P`, every one with a TTL refreshed on each write):
//!
//! - `P session:<proxy session id>`: a hash `upstream_session_id`, `upstream`,
//!   `protocol_version`, `created_ms`, `route` (the route's name; absent in a record of a
//!   version before routes: read as empty);
//! - `P streams:<proxy session id>`: a hash of stream positions, field `pos:<stream id>` →
//!   `<seq>:<upstream event id>` (the last upstream event id and the proxy sequence number of
//!   the event that carried it), field `last:<stream id>` → the stream's last sequence number
//!   (absent: `seq`), and field `<stream id>` → the upstream event id alone, the format of
//!   versions before sequence numbers were persisted, still written for replicas of those
//!   versions during a rolling upgrade. When `<stream id>` names another upstream id than
//!   `pos:`, such a replica wrote it later: the position is read from it, without a seq;
//! - `P activity`: a sorted set of proxy session ids scored by last activity (ms since the Unix
//!   epoch), written with `ZADD GT` so the latest activity of any replica wins. It is the index
//!   idle expiry claims from; entries whose session key expired are dropped as they are met.
//!
//! Garbage under the prefix (a key of the wrong type, a malformed record) never stops the store
//! for good: a write that meets a wrong-typed key deletes the keys of the batch that are not
//! of the type the proxy writes, then writes again; a claim deletes a wrong-typed index or
//! record; a read skips a wrong-typed or malformed record (it reads as absent). Each such
//! entry is logged and counted ([`SessionStore::take_repairs`]).
//!
//! A batch is one pipeline (one round trip); a claim of idle sessions is one Lua script, so
//! concurrent replicas never claim the same session twice. The connection is a
//! [`ConnectionManager`]: multiplexed, created lazily, re-established after I/O errors. The
//! store never retries on its own: the PersistenceWorker owns retries and their backoff.
//!
//! Scripts name keys they compute from the prefix, so the store targets a standalone Redis (or
//! one behind Sentinel), not Redis Cluster.

use std::{
    future::Future,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime},
};

use ::redis::{
    Client, FromRedisValue, IntoConnectionInfo, Pipeline, Script, Value,
    aio::{ConnectionManager, ConnectionManagerConfig},
};
use async_trait::async_trait;

use self::encoding::{
    claimed_record, decode_position, last_seq_field, parse_ms, position_field, ttl_ms,
};
use super::{
    SessionRecord, SessionStore, StoreConfig, StoreError, StoreErrorKind, StoreErrorSource,
    StreamPosition, WriteBatch, from_unix_ms, unix_ms,
};

mod encoding;

const BACKEND: &str = "redis";

/// Claims idle sessions atomically. KEYS[1]: the activity index; ARGV: cutoff (ms, exclusive),
/// limit, key prefix. Returns `[rows, wrong_typed]`: rows are `[id, upstream_session_id,
/// upstream, protocol_version, created_ms, last_activity_ms, route]` per claimed session whose record
/// still existed; `wrong_typed` counts keys that were not of the proxy's type (deleted).
const CLAIM_SCRIPT: &str = include_str!("claim.lua");

/// The Redis-backed [`SessionStore`].
pub struct RedisStore {
    connection: ConnectionManager,
    prefix: String,
    /// Bound on one whole operation, beyond the connection's own timeouts.
    op_timeout: Duration,
    claim: Script,
    /// Wrong-typed keys and malformed records met since the last [`SessionStore::take_repairs`].
    repairs: AtomicU64,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: it is not kept here.
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Redis failing `operation`: unreachable when the connection failed (refused, lost, timed
/// out), rejected when Redis answered with an error.
fn redis_error(operation: &'static str, err: ::redis::RedisError) -> StoreError {
    let kind = if err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
    {
        StoreErrorKind::Unreachable
    } else {
        StoreErrorKind::Rejected
    };
    StoreError::new(BACKEND, operation, kind, err)
}

/// No answer to `operation` within `limit`.
fn no_answer(operation: &'static str, limit: Duration) -> StoreError {
    StoreError::new(
        BACKEND,
        operation,
        StoreErrorKind::Unreachable,
        format!("no answer within {limit:?}"),
    )
}

/// An answer to `operation` the store cannot read.
fn bad_answer(operation: &'static str, cause: impl Into<StoreErrorSource>) -> StoreError {
    StoreError::new(BACKEND, operation, StoreErrorKind::BadAnswer, cause)
}

/// Checks that `url` is a Redis URL this build can use (no TLS). The message never repeats the
/// URL: it may carry a password.
pub(super) fn check_url(url: &str) -> Result<(), String> {
    if url.starts_with("rediss://") || url.starts_with("valkeys://") {
        return Err("TLS (rediss://) is not supported by this build".into());
    }
    url.into_connection_info()
        .map(drop)
        .map_err(|e| format!("not a Redis URL ({:?})", e.kind()))
}

impl RedisStore {
    /// A store on the Redis at `config.url`, namespaced by `config.key_prefix`. Connects on the
    /// first operation, not here. Errors: what [`StoreConfig::check`] refuses. Must be called
    /// inside a tokio runtime.
    pub fn open(config: &StoreConfig) -> Result<Self, StoreError> {
        let mut config = config.clone();
        config.backend = super::StoreBackend::Redis;
        let refused = |key, message: String| {
            StoreError::new(BACKEND, "opening", StoreErrorKind::Config { key }, message)
        };
        config
            .check()
            .map_err(|(key, message)| refused(key, message))?;
        let url = config.url.as_deref().unwrap_or_default();
        // Only the error's kind: its text may repeat the URL, which may carry a password.
        let client =
            Client::open(url).map_err(|e| refused("store.url", format!("{:?}", e.kind())))?;
        let timeout = config.timeout.max(Duration::from_millis(1));
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            // One connection attempt per operation: the worker owns retries and backoff, and
            // its probe must learn of Redis's return at once, not after a reconnect backoff.
            .set_number_of_retries(0)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(timeout);
        let connection = ConnectionManager::new_lazy_with_config(client, manager_config)
            .map_err(|e| redis_error("creating the connection manager", e))?;
        Ok(Self {
            connection,
            prefix: config.key_prefix.clone(),
            op_timeout: timeout * 3,
            claim: Script::new(CLAIM_SCRIPT),
            repairs: AtomicU64::new(0),
        })
    }

    fn session_key(&self, session: &str) -> String {
        format!("{}session:{session}", self.prefix)
    }

    fn streams_key(&self, session: &str) -> String {
        format!("{}streams:{session}", self.prefix)
    }

    fn activity_key(&self) -> String {
        format!("{}activity", self.prefix)
    }

    /// Runs one operation under the store's overall timeout.
    async fn bounded<T>(
        &self,
        what: &'static str,
        op: impl Future<Output = Result<T, ::redis::RedisError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.op_timeout, op).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(redis_error(what, e)),
            Err(_) => Err(no_answer(what, self.op_timeout)),
        }
    }

    /// Deletes the keys `batch` writes that hold another type than the one the proxy writes
    /// there (a sorted set for the index, hashes for records and positions), so the batch can
    /// be written again. Returns how many were deleted.
    async fn repair(&self, batch: &WriteBatch) -> Result<u64, StoreError> {
        let mut keys = vec![(self.activity_key(), "zset")];
        keys.extend(
            batch
                .sessions
                .iter()
                .map(|r| (self.session_key(&r.session_id), "hash")),
        );
        keys.extend(
            batch
                .positions
                .iter()
                .map(|p| (self.streams_key(&p.session_id), "hash")),
        );
        let mut pipe = ::redis::pipe();
        for (key, _) in &keys {
            pipe.cmd("TYPE").arg(key);
        }
        let kinds = self.query("checking key types", &pipe).await?;
        let mut repaired = 0;
        for ((key, expected), kind) in keys.iter().zip(kinds) {
            let kind: String = parse("TYPE", kind)?;
            if kind == *expected || kind == "none" {
                continue;
            }
            let mut conn = self.connection.clone();
            self.bounded("deleting a wrong-typed key", async {
                ::redis::cmd("DEL")
                    .arg(key)
                    .query_async::<i64>(&mut conn)
                    .await
            })
            .await?;
            tracing::warn!(key = %key, found = %kind, expected, "deleted a wrong-typed key under the store's prefix");
            repaired += 1;
        }
        self.repairs.fetch_add(repaired, Ordering::Relaxed);
        Ok(repaired)
    }

    /// Counts one wrong-typed or malformed entry met on a read or claim.
    fn skipped(&self, key: &str, why: &str) {
        tracing::warn!(key = %key, reason = why, "skipped a malformed entry in the session store");
        self.repairs.fetch_add(1, Ordering::Relaxed);
    }

    async fn query(&self, what: &'static str, pipe: &Pipeline) -> Result<Vec<Value>, StoreError> {
        let mut conn = self.connection.clone();
        self.bounded(what, pipe.query_async::<Vec<Value>>(&mut conn))
            .await
    }
}

fn parse<T: FromRedisValue>(what: &'static str, v: Value) -> Result<T, StoreError> {
    T::from_redis_value(v).map_err(|e| bad_answer(what, e))
}

/// Whether `err` is Redis refusing a command for a key of another type.
fn is_wrong_type(err: &::redis::RedisError) -> bool {
    err.code() == Some("WRONGTYPE") || err.to_string().contains("WRONGTYPE")
}

#[async_trait]
impl SessionStore for RedisStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.connection.clone();
        let pong: String = self
            .bounded("PING", ::redis::cmd("PING").query_async(&mut conn))
            .await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(bad_answer("PING", format!("answered {pong:?}")))
        }
    }

    async fn write(&self, batch: &WriteBatch, ttl: Duration) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let ttl = ttl_ms(ttl);
        let activity = self.activity_key();
        let mut pipe = ::redis::pipe();
        for r in &batch.sessions {
            let key = self.session_key(&r.session_id);
            pipe.cmd("HSET")
                .arg(&key)
                .arg("upstream_session_id")
                .arg(&r.upstream_session_id)
                .arg("upstream")
                .arg(&r.upstream)
                .arg("route")
                .arg(&r.route)
                .arg("protocol_version")
                .arg(&r.protocol_version)
                .arg("created_ms")
                .arg(unix_ms(r.created))
                .ignore();
            pipe.cmd("PEXPIRE").arg(&key).arg(ttl).ignore();
            pipe.cmd("ZADD")
                .arg(&activity)
                .arg("GT")
                .arg(unix_ms(r.last_activity))
                .arg(&r.session_id)
                .ignore();
        }
        if !batch.sessions.is_empty() {
            pipe.cmd("PEXPIRE").arg(&activity).arg(ttl).ignore();
        }
        for p in &batch.positions {
            let key = self.streams_key(&p.session_id);
            let hset = pipe.cmd("HSET").arg(&key);
            if let Some(seq) = p.seq {
                hset.arg(position_field(&p.stream_id))
                    .arg(format!("{seq}:{}", p.upstream_event_id))
                    .arg(last_seq_field(&p.stream_id))
                    .arg(p.last_seq.unwrap_or(seq).max(seq));
            }
            // The old format too, in the same command: replicas of older versions read it.
            hset.arg(&p.stream_id).arg(&p.upstream_event_id).ignore();
            pipe.cmd("PEXPIRE").arg(&key).arg(ttl).ignore();
        }
        for id in &batch.deletes {
            pipe.cmd("DEL")
                .arg(self.session_key(id))
                .arg(self.streams_key(id))
                .ignore();
            pipe.cmd("ZREM").arg(&activity).arg(id).ignore();
        }
        let mut conn = self.connection.clone();
        let first =
            tokio::time::timeout(self.op_timeout, pipe.query_async::<Vec<Value>>(&mut conn)).await;
        match first {
            Ok(Ok(_)) => Ok(()),
            // Garbage under the prefix: repair what this batch writes, then write once more.
            Ok(Err(e)) if is_wrong_type(&e) => {
                if self.repair(batch).await? == 0 {
                    return Err(redis_error("writing a batch", e));
                }
                self.query("writing a batch", &pipe).await.map(drop)
            }
            Ok(Err(e)) => Err(redis_error("writing a batch", e)),
            Err(_) => Err(no_answer("writing a batch", self.op_timeout)),
        }
    }

    async fn get_sessions(&self, ids: &[String]) -> Result<Vec<Option<SessionRecord>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let activity = self.activity_key();
        let mut pipe = ::redis::pipe();
        for id in ids {
            pipe.cmd("HMGET")
                .arg(self.session_key(id))
                .arg("upstream_session_id")
                .arg("upstream")
                .arg("protocol_version")
                .arg("created_ms")
                .arg("route");
            pipe.cmd("ZSCORE").arg(&activity).arg(id);
        }
        // A wrong-typed key fails its own command only, not the whole read.
        pipe.ignore_errors();
        let answers = self.query("reading sessions", &pipe).await?;
        if answers.len() != ids.len() * 2 {
            return Err(bad_answer(
                "reading sessions",
                format!("{} answers for {} commands", answers.len(), ids.len() * 2),
            ));
        }
        let mut answers = answers.into_iter();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let (Some(fields), Some(score)) = (answers.next(), answers.next()) else {
                break;
            };
            let fields: Vec<Option<String>> = match fields {
                Value::ServerError(e) => {
                    self.skipped(&self.session_key(id), e.code());
                    out.push(None);
                    continue;
                }
                v => parse("HMGET", v)?,
            };
            let score: Option<String> = match score {
                Value::ServerError(e) => {
                    self.skipped(&activity, e.code());
                    None
                }
                v => parse("ZSCORE", v)?,
            };
            let mut fields = fields.into_iter();
            let mut next = || fields.next().flatten();
            let (Some(upstream_session_id), upstream, protocol_version, created, route) =
                (next(), next(), next(), next(), next())
            else {
                out.push(None);
                continue;
            };
            if !super::is_upstream_session_id(&upstream_session_id) {
                self.skipped(&self.session_key(id), "malformed upstream session id");
                out.push(None);
                continue;
            }
            let created = from_unix_ms(created.as_deref().map_or(0, parse_ms));
            let last_activity = score
                .as_deref()
                .map_or(created, |s| from_unix_ms(parse_ms(s)));
            out.push(Some(SessionRecord {
                session_id: id.clone(),
                upstream_session_id,
                upstream: upstream.unwrap_or_default(),
                route: route.unwrap_or_default(),
                protocol_version: protocol_version.unwrap_or_default(),
                created,
                last_activity,
            }));
        }
        Ok(out)
    }

    async fn get_stream_positions(
        &self,
        keys: &[(String, String)],
    ) -> Result<Vec<Option<StreamPosition>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = ::redis::pipe();
        for (session, stream) in keys {
            pipe.cmd("HMGET")
                .arg(self.streams_key(session))
                .arg(position_field(stream))
                .arg(last_seq_field(stream))
                .arg(stream);
        }
        // A wrong-typed key fails its own command only, not the whole read.
        pipe.ignore_errors();
        let answers = self.query("reading stream positions", &pipe).await?;
        if answers.len() != keys.len() {
            return Err(bad_answer(
                "reading stream positions",
                format!("{} answers for {} commands", answers.len(), keys.len()),
            ));
        }
        keys.iter()
            .zip(answers)
            .map(|((session, stream), v)| {
                let fields: Vec<Option<String>> = match v {
                    Value::ServerError(e) => {
                        self.skipped(&self.streams_key(session), e.code());
                        return Ok(None);
                    }
                    v => parse("HMGET", v)?,
                };
                let mut fields = fields.into_iter();
                let (position, last_seq, old_format) = (
                    fields.next().flatten(),
                    fields.next().flatten(),
                    fields.next().flatten(),
                );
                let Some((seq, last_seq, upstream_event_id)) =
                    decode_position(position.as_deref(), last_seq.as_deref(), old_format)
                else {
                    return Ok(None);
                };
                // It goes upstream as `Last-Event-ID`: one header line of bounded size.
                if !super::is_upstream_event_id(&upstream_event_id) {
                    self.skipped(&self.streams_key(session), "malformed upstream event id");
                    return Ok(None);
                }
                Ok(Some(StreamPosition {
                    session_id: session.clone(),
                    stream_id: stream.clone(),
                    seq,
                    last_seq,
                    upstream_event_id,
                }))
            })
            .collect()
    }

    fn take_repairs(&self) -> u64 {
        self.repairs.swap(0, Ordering::Relaxed)
    }

    async fn claim_idle_sessions(
        &self,
        idle_before: SystemTime,
        limit: usize,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.connection.clone();
        let mut invocation = self.claim.key(self.activity_key());
        invocation
            .arg(unix_ms(idle_before))
            .arg(limit)
            .arg(&self.prefix);
        let (rows, wrong_typed): (Vec<Vec<String>>, u64) = self
            .bounded("claiming idle sessions", invocation.invoke_async(&mut conn))
            .await?;
        if wrong_typed > 0 {
            self.skipped(&self.activity_key(), "wrong-typed keys deleted by a claim");
            self.repairs.fetch_add(wrong_typed - 1, Ordering::Relaxed);
        }
        Ok(rows.into_iter().filter_map(claimed_record).collect())
    }
}
