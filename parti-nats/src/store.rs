//! `NatsStore`: connecting, checking the server, and provisioning buckets.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::context::{
    ContextBuilder, CreateKeyValueErrorKind, GetStreamError, GetStreamErrorKind,
    UpdateStreamErrorKind,
};
use async_nats::jetstream::kv;
use async_nats::jetstream::stream::StorageType;
use async_nats::jetstream::{self, ErrorCode};
use parti_core::store::{BucketSpec, Operation, StorageKind, Store, StoreError, StoreResult};

use crate::bucket::NatsBucket;
use crate::errors::Target;

/// The oldest server parti runs on: 2.11 writes a marker when a TTL expires an entry, which
/// is how watchers see expiry.
pub const MIN_SERVER_VERSION: (u64, u64) = (2, 11);

/// How long a JetStream request may take before it counts as timed out, unless set.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long [`Store::bucket`] waits before creating again a bucket it opened before and
/// finds gone. nats-server removes a deleted stream's files in the background, and a stream
/// created under the same name meanwhile can lose its files to that removal (every write to
/// it then fails, until the bucket is deleted and created again — which
/// [`NatsBucket`]'s writes do when they find it so).
const RECREATE_AFTER: Duration = Duration::from_millis(200);

/// parti's [`Store`] on NATS JetStream key-value buckets.
///
/// Build it from a URL ([`NatsStore::connect`]) or from a client you configured yourself
/// (TLS, credentials, …) with [`NatsStore::new`]. Cloning is cheap and shares the client.
///
/// Buckets are JetStream KV buckets with history 1 and, for a TTL, the bucket's `max_age`
/// plus limit markers, so that an expiry reaches watchers as a delete.
///
/// Reads see every acknowledged write, also on a cluster: buckets have *direct gets* off, so
/// `get` and the listings are answered by the stream's leader, never by a replica that has not
/// caught up yet (see [`Store`]'s read contract). A bucket that exists with direct gets on
/// (created by another tool, or by an older parti) is switched over when it is opened.
///
/// ```no_run
/// use std::time::Duration;
/// use parti_core::store::{Bucket, BucketSpec, Store};
/// use parti_nats::NatsStore;
///
/// # async fn example() -> Result<(), parti_core::store::StoreError> {
/// let store = NatsStore::connect("nats://127.0.0.1:4222").await?;
/// let spec = BucketSpec::new("parti-heartbeat")?.with_ttl(Duration::from_secs(3)).with_replicas(3);
/// let heartbeats = store.bucket(&spec).await?;
/// heartbeats.put("worker-0", "alive".into()).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct NatsStore {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    /// How long a JetStream request may take.
    request_timeout: Duration,
    /// The buckets this store (or a clone) opened: one of them missing was deleted since.
    opened: Arc<Mutex<BTreeSet<String>>>,
}

impl fmt::Debug for NatsStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsStore")
            .field("server", &self.client.server_info().server_name)
            .field("state", &self.client.connection_state())
            .finish()
    }
}

impl NatsStore {
    /// Connects to the NATS server at `url`, or to any of a comma-separated list of
    /// servers of one cluster. The client reconnects by itself after the connection is
    /// lost; operations meanwhile fail with transient errors.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when no server answers at `url` (worth retrying: it may
    /// be starting); [`StoreError::Backend`], which is permanent, when `url` is not a NATS
    /// URL or the server refuses the client (authentication, authorization, TLS).
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let servers: Vec<&str> = url.split(',').map(str::trim).collect();
        let client = async_nats::ConnectOptions::new()
            .name("parti")
            .connect(servers)
            .await
            .map_err(|e| connect_error(url, e))?;
        Ok(Self::new(client))
    }

    /// Uses an existing client, with the default request timeout.
    pub fn new(client: async_nats::Client) -> Self {
        Self::with_request_timeout(client, DEFAULT_REQUEST_TIMEOUT)
    }

    /// Uses an existing client; a write without an acknowledgement within `timeout` fails
    /// with [`StoreError::OutcomeUnknown`], a read with [`StoreError::Unavailable`].
    pub fn with_request_timeout(client: async_nats::Client, timeout: Duration) -> Self {
        let jetstream = ContextBuilder::new().timeout(timeout).build(client.clone());
        Self {
            client,
            jetstream,
            request_timeout: timeout,
            opened: Arc::default(),
        }
    }

    /// The client this store uses.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// Opens the bucket `name` for reading, if it exists: unlike [`Store::bucket`] it never
    /// creates a bucket and never changes one (not even the direct-gets setting `bucket`
    /// turns off, so on a replicated bucket with direct gets on a read may come from a
    /// replica that is behind). For tools that look at a fleet without taking part —
    /// `parti status`. `None` when there is no such bucket.
    ///
    /// # Errors
    /// [`StoreError::InvalidBucket`] for an invalid name; transient errors when the server
    /// cannot say.
    pub async fn open_existing(&self, name: &str) -> StoreResult<Option<NatsBucket>> {
        parti_core::store::check_bucket_name(name)?;
        let target = Target {
            operation: Operation::OpenBucket,
            bucket: name,
            key: "",
        };
        self.check_connected(target)?;
        Ok(self
            .lookup(name, target)
            .await?
            .map(|kv| NatsBucket::new(self.clone(), kv)))
    }

    /// A handle of `kv`, noted as opened.
    fn opened(&self, kv: kv::Store) -> NatsBucket {
        self.opened
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(kv.name.clone());
        NatsBucket::new(self.clone(), kv)
    }

    /// Whether this store opened the bucket `name` before.
    fn was_opened(&self, name: &str) -> bool {
        self.opened
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(name)
    }

    /// Fails fast when the client knows it is disconnected: a write sent now would wait in
    /// the client's buffer and might be applied long after the caller gave up on it.
    pub(crate) fn check_connected(&self, target: Target<'_>) -> StoreResult<()> {
        match self.client.connection_state() {
            State::Connected => Ok(()),
            state => Err(target.unavailable(format!("not connected to NATS ({state:?})"), None)),
        }
    }

    pub(crate) fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    /// How long a JetStream request may take before it counts as timed out.
    pub(crate) fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    fn check_server_version(&self, target: Target<'_>) -> StoreResult<()> {
        let info = self.client.server_info();
        if !info.jetstream {
            return Err(target.backend(
                format!(
                    "nats-server {} at {}:{} has JetStream disabled: parti keeps its state in                      JetStream KV buckets — start the server with `-js` (or a `jetstream {{}}`                      block in its configuration)",
                    info.server_name, info.host, info.port
                ),
                None,
            ));
        }
        let version = info.version;
        let parsed = parse_version(&version);
        match parsed {
            Some(found) if found >= MIN_SERVER_VERSION => Ok(()),
            _ => Err(target.backend(
                format!(
                    "nats-server {version} is too old: parti needs {}.{} or newer (TTL expiry \
                     markers); Debian's nats-server package is 2.9 — install a current release",
                    MIN_SERVER_VERSION.0, MIN_SERVER_VERSION.1
                ),
                None,
            )),
        }
    }

    /// Whether the bucket's stream exists, to tell a deleted bucket from an unreachable
    /// server. `Err` when the server cannot say.
    pub(crate) async fn stream_exists(&self, target: Target<'_>) -> StoreResult<bool> {
        match self.jetstream.get_stream(stream_name(target.bucket)).await {
            Ok(_) => Ok(true),
            Err(e) if is_stream_not_found(&e) => Ok(false),
            Err(e) => Err(target.unavailable(e.to_string(), Some(Box::new(e) as _))),
        }
    }

    /// The existing bucket, checked against `spec`; `None` when it does not exist.
    async fn bind(&self, spec: &BucketSpec, target: Target<'_>) -> StoreResult<Option<kv::Store>> {
        let Some(store) = self.lookup(spec.name(), target).await? else {
            return Ok(None);
        };
        let config = &store.stream.cached_info().config;
        let ttl = spec.ttl().unwrap_or(Duration::ZERO);
        if config.max_age != ttl || config.max_messages_per_subject != 1 {
            return Err(StoreError::BucketMismatch {
                bucket: spec.name().to_owned(),
                detail: format!(
                    "ttl is {:?} with history {}, asked for {ttl:?} with history 1",
                    config.max_age, config.max_messages_per_subject
                ),
            });
        }
        Ok(Some(store))
    }

    /// The existing bucket `name` as it is; `None` when it does not exist.
    async fn lookup(&self, name: &str, target: Target<'_>) -> StoreResult<Option<kv::Store>> {
        match self.jetstream.get_key_value(name).await {
            Ok(store) => Ok(Some(store)),
            Err(e) => {
                // `get_key_value` looks the stream up: a missing one is its error's source.
                let missing = std::error::Error::source(&e)
                    .and_then(|cause| cause.downcast_ref::<GetStreamError>())
                    .is_some_and(is_stream_not_found);
                if missing {
                    Ok(None)
                } else {
                    Err(target.unavailable(e.to_string(), Some(Box::new(e) as _)))
                }
            }
        }
    }

    /// Binds the existing bucket and makes sure its reads go through the stream leader: a
    /// bucket with direct gets on is switched over in place. `None` when it does not exist.
    async fn bind_consistent(
        &self,
        spec: &BucketSpec,
        target: Target<'_>,
    ) -> StoreResult<Option<kv::Store>> {
        let Some(kv) = self.bind(spec, target).await? else {
            return Ok(None);
        };
        if !kv.stream.cached_info().config.allow_direct {
            return Ok(Some(kv));
        }
        self.turn_off_direct_gets(&kv, target).await?;
        // Bind again: the handle reads through the leader only if the stream info it
        // holds says direct gets are off.
        match self.bind(spec, target).await? {
            Some(kv) if !kv.stream.cached_info().config.allow_direct => Ok(Some(kv)),
            Some(_) => Err(direct_gets_on(spec.name(), "the server kept them on")),
            None => Ok(None),
        }
    }

    /// Turns direct gets off on the bucket's stream. Direct gets may be answered by any
    /// replica, also one that has not yet stored an acknowledged write.
    async fn turn_off_direct_gets(&self, kv: &kv::Store, target: Target<'_>) -> StoreResult<()> {
        let mut config = kv.stream.cached_info().config.clone();
        config.allow_direct = false;
        match self.jetstream.update_stream(&config).await {
            Ok(_) => {
                tracing::info!(
                    bucket = target.bucket,
                    "turned direct gets off: reads now go through the stream leader"
                );
                Ok(())
            }
            Err(e) => match e.kind() {
                UpdateStreamErrorKind::TimedOut | UpdateStreamErrorKind::JetStreamUnavailable => {
                    Err(target.unavailable(e.to_string(), Some(Box::new(e) as _)))
                }
                _ => Err(direct_gets_on(target.bucket, &e.to_string())),
            },
        }
    }

    async fn create(&self, spec: &BucketSpec, target: Target<'_>) -> StoreResult<()> {
        let config = kv::Config {
            bucket: spec.name().to_owned(),
            history: 1,
            max_age: spec.ttl().unwrap_or(Duration::ZERO),
            storage: match spec.storage() {
                StorageKind::File => StorageType::File,
                StorageKind::Memory => StorageType::Memory,
            },
            num_replicas: spec.replicas(),
            // A marker on expiry (kept at least one second, the server's minimum) is what
            // lets watchers see TTL expiry as a delete.
            limit_markers: spec
                .ttl()
                .map(|ttl| ttl.max(Duration::from_secs(1)).as_secs().max(1))
                .map(Duration::from_secs),
            ..Default::default()
        };
        self.jetstream
            .create_key_value(config)
            .await
            .map(drop)
            .map_err(|e| {
                let message = e.to_string();
                match e.kind() {
                    CreateKeyValueErrorKind::InvalidStoreName
                    | CreateKeyValueErrorKind::TooLongHistory => StoreError::InvalidBucket {
                        bucket: spec.name().to_owned(),
                        reason: message,
                    },
                    CreateKeyValueErrorKind::LimitMarkersNotSupported => target.backend(
                        format!("{message}: parti needs nats-server 2.11 or newer"),
                        Some(Box::new(e) as _),
                    ),
                    CreateKeyValueErrorKind::TimedOut | CreateKeyValueErrorKind::JetStream => {
                        target.unavailable(message, Some(Box::new(e) as _))
                    }
                    CreateKeyValueErrorKind::BucketCreate => {
                        target.backend(message, Some(Box::new(e) as _))
                    }
                }
            })
    }
}

/// What a failed connect means: nobody answering is transient (the server may be starting);
/// a malformed URL or a refused client is not.
fn connect_error(url: &str, error: async_nats::ConnectError) -> StoreError {
    use async_nats::ConnectErrorKind as Kind;
    let (permanent, what) = match error.kind() {
        Kind::ServerParse => (true, "it is not a valid NATS server URL (list)"),
        Kind::Authentication | Kind::AuthorizationViolation => {
            (true, "the server refused the client's credentials")
        }
        Kind::Tls => (true, "the TLS setup failed"),
        Kind::Dns => (false, "its host name does not resolve"),
        Kind::TimedOut | Kind::Io | Kind::MaxReconnects => (false, "no server answers there"),
    };
    let message = format!("cannot connect to NATS at `{url}`: {what} ({error})");
    let source = Some(Box::new(error) as _);
    if permanent {
        StoreError::Backend {
            operation: Operation::Connect,
            message,
            source,
        }
    } else {
        StoreError::Unavailable {
            operation: Operation::Connect,
            message,
            source,
        }
    }
}

impl Store for NatsStore {
    type Bucket = NatsBucket;

    async fn bucket(&self, spec: &BucketSpec) -> StoreResult<NatsBucket> {
        spec.validate()?;
        let target = Target {
            operation: Operation::OpenBucket,
            bucket: spec.name(),
            key: "",
        };
        self.check_connected(target)?;
        self.check_server_version(target)?;
        if let Some(kv) = self.bind_consistent(spec, target).await? {
            return Ok(self.opened(kv));
        }
        if self.was_opened(spec.name()) {
            // Deleted since: give the server time to remove the old stream's files (see
            // `RECREATE_AFTER`); someone else may create it meanwhile.
            tokio::time::sleep(RECREATE_AFTER).await;
            if let Some(kv) = self.bind_consistent(spec, target).await? {
                return Ok(self.opened(kv));
            }
        }
        // async-nats creates KV streams with direct gets on; binding turns them off.
        let create_error = self.create(spec, target).await.err();
        match self.bind_consistent(spec, target).await? {
            Some(kv) => Ok(self.opened(kv)),
            None => Err(create_error.unwrap_or_else(|| {
                target.unavailable("the bucket vanished right after it was created", None)
            })),
        }
    }

    async fn delete_bucket(&self, name: &str) -> StoreResult<()> {
        parti_core::store::check_bucket_name(name)?;
        let target = Target {
            operation: Operation::DeleteBucket,
            bucket: name,
            key: "",
        };
        self.check_connected(target)?;
        if !self.stream_exists(target).await? {
            return Err(target.not_found());
        }
        self.jetstream
            .delete_stream(stream_name(name))
            .await
            .map_err(|e| target.unavailable(e.to_string(), Some(Box::new(e) as _)))?;
        Ok(())
    }
}

/// The error for a bucket whose direct gets are on and stay on.
fn direct_gets_on(bucket: &str, why: &str) -> StoreError {
    StoreError::BucketMismatch {
        bucket: bucket.to_owned(),
        detail: format!(
            "its stream {} has direct gets on (allow_direct), so a replica that is behind may \
             answer reads with an older value, and turning them off failed: {why}; run \
             `nats stream edit {} --no-allow-direct` with rights to edit the stream",
            stream_name(bucket),
            stream_name(bucket)
        ),
    }
}

/// Whether a stream lookup failed because the stream does not exist.
fn is_stream_not_found(error: &GetStreamError) -> bool {
    matches!(
        error.kind(),
        GetStreamErrorKind::JetStream(js) if js.error_code() == ErrorCode::STREAM_NOT_FOUND
    )
}

/// The JetStream stream behind a KV bucket.
pub(crate) fn stream_name(bucket: &str) -> String {
    format!("KV_{bucket}")
}

/// `major.minor` of a server version such as `2.12.8` or `2.11.0-beta.1`.
fn parse_version(version: &str) -> Option<(u64, u64)> {
    let mut parts = version.trim_start_matches('v').split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_versions() {
        assert_eq!(parse_version("2.12.8"), Some((2, 12)));
        assert_eq!(parse_version("v2.11.0-beta.1"), Some((2, 11)));
        assert_eq!(parse_version("2.9.10"), Some((2, 9)));
        assert!(parse_version("2.9.10").unwrap() < MIN_SERVER_VERSION);
        assert_eq!(parse_version("garbage"), None);
    }
}
