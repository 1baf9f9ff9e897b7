//! Builds the application from settings and serves it until a shutdown signal.

use crate::auth::AppRegistry;
use crate::config::{AuditSettings, DatabaseSettings, RetentionSettings, Settings};
use crate::oidc::People;
use crate::routes::{AppState, router};
use crate::server;
use crate::store::{self, Store, StoreError};
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::time::Instant;

/// Opens the store and resolves the apps' secrets. The database is not contacted yet
/// (see [`prepare_database`]).
pub async fn build_state(settings: &Settings) -> anyhow::Result<AppState> {
    settings.server.check()?;
    settings.audit.check()?;
    let apps = AppRegistry::from_settings(&settings.auth, &settings.apps)
        .context("invalid [[apps]] or [auth] configuration")?;
    crate::webhooks::Endpoint::all(&settings.webhooks, &settings.webhook_allow_hosts)
        .context("invalid [[webhooks]] configuration")?;
    let people = settings
        .auth
        .oidc
        .as_ref()
        .map(|oidc| People::new(oidc, settings.auth.leeway_seconds).map(Arc::new))
        .transpose()
        .context("invalid [auth.oidc] configuration")?;
    let store = store::connect(&settings.database).await?;
    Ok(AppState::new(
        store,
        Arc::new(apps),
        &settings.server,
        &settings.idempotency,
        &settings.changes,
    )
    .with_stats(&settings.stats)
    .with_webhooks(&settings.webhooks)
    .with_people(people))
}

/// Serves until SIGTERM or Ctrl-C, then lets in-flight requests finish (bounded) and
/// closes the database pool. The listener is up from the start, so that `/healthz`
/// answers while the database is prepared (`/readyz` says 503 until it is); a signal ends
/// the process at any point of that.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let (signalled, shutdown) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing in-flight requests");
        signalled.send_replace(true);
    });
    let requested = |mut shutdown: tokio::sync::watch::Receiver<bool>| async move {
        let _ = shutdown.wait_for(|stopping| *stopping).await;
    };

    let mut state = build_state(&settings).await?;
    if let Some(people) = state.people.clone() {
        tokio::spawn(async move { people.warm_up().await });
    }
    let mut audit_writer = None;
    if settings.audit.enabled {
        let (recorder, writer) = crate::audit::spawn(state.store.clone());
        state = state.with_audit(recorder.trusting(&settings.server.trusted_proxies)?);
        audit_writer = Some(writer);
    }
    let endpoints =
        crate::webhooks::Endpoint::all(&settings.webhooks, &settings.webhook_allow_hosts)?;
    let store = state.store.clone();
    let hub = state.changes.clone();
    let app = router(state, &settings.server);
    let listener = TcpListener::bind(settings.server.bind)
        .await
        .with_context(|| format!("cannot listen on {}", settings.server.bind))?;
    tracing::info!(address = %listener.local_addr()?, "listening");
    let limits = server::Limits::of(&settings.server)
        .fit_descriptor_limit(settings.database.max_connections);
    let (stopping, stopped) = tokio::sync::oneshot::channel();
    let (give_up, given_up) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn({
        let shutdown = shutdown.clone();
        let hub = hub.clone();
        async move {
            let server = server::Server::new(limits);
            server
                .serve(listener, app, async move {
                    tokio::select! {
                        () = requested(shutdown) => {}
                        _ = given_up => {}
                    }
                    // Live streams never finish by themselves.
                    hub.stop();
                    let _ = stopping.send(());
                })
                .await;
        }
    });

    let prepared = tokio::select! {
        prepared = prepare_database(&store, &settings.database) => prepared,
        () = requested(shutdown.clone()) => Ok(()),
    };
    let mut background = Vec::new();
    let mut deliveries = None;
    if prepared.is_ok() && !*shutdown.borrow() {
        background = vec![
            tokio::spawn({
                let (store, hub) = (store.clone(), hub.clone());
                async move { crate::changes::relay(&store, &hub).await }
            }),
            tokio::spawn(purge_expired_keys(
                store.clone(),
                Duration::from_secs(settings.idempotency.retention_seconds),
            )),
            tokio::spawn(enforce_retention(
                store.clone(),
                settings.retention.clone(),
                settings.audit.clone(),
            )),
            tokio::spawn(crate::stats::count(
                store.clone(),
                hub.clone(),
                settings.stats.clone(),
            )),
            crate::metrics::spawn_upkeep(),
        ];
        deliveries = Some(crate::webhooks::spawn(&store, &hub, endpoints));
    } else {
        let _ = give_up.send(());
    }

    let grace = Duration::from_secs(settings.server.shutdown_timeout_seconds);
    tokio::select! {
        _ = serving => {}
        () = async {
            if stopped.await.is_ok() {
                tokio::time::sleep(grace).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => tracing::warn!("in-flight requests did not finish within {grace:?}; stopping anyway"),
    }
    for task in background {
        task.abort();
    }
    if let Some(deliveries) = deliveries {
        deliveries.stop(&store).await;
    }
    // After the requests: every read they made is queued by now.
    if let Some(writer) = audit_writer {
        writer.finish(AUDIT_FLUSH_LIMIT).await;
    }
    store.close().await;
    prepared?;
    tracing::info!("stopped");
    Ok(())
}

/// Brings the database to where the service can use it: migrated (when
/// `database.migrate_on_start`) or at least reachable and migrated by someone else.
/// Retries what may pass (an unreachable database, a certificate that fails verification,
/// another replica's migrations not done) for `database.connect_timeout_seconds`, logging
/// each try; then fails with the last error.
pub async fn prepare_database(store: &Store, settings: &DatabaseSettings) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(settings.connect_timeout_seconds);
    let reach_limit = Duration::from_secs(settings.acquire_timeout_seconds.max(1));
    let mut pause = Duration::from_millis(250);
    let mut attempt = 1;
    loop {
        let outcome = async {
            // Bounded: a connection attempt to a host that drops packets would hang.
            tokio::time::timeout(reach_limit, store.reach())
                .await
                .unwrap_or_else(|_| Err(no_answer(reach_limit)))?;
            if settings.migrate_on_start {
                store.migrate().await
            } else {
                store.ready().await
            }
        }
        .await;
        let error = match outcome {
            Ok(()) => {
                tracing::info!(attempt, "database ready");
                return Ok(());
            }
            // A migration that fails on a database that answers would fail again.
            Err(StoreError::Other(error)) if settings.migrate_on_start => {
                return Err(error.context("failed to apply database migrations"));
            }
            Err(error) => error,
        };
        if Instant::now() + pause >= deadline {
            return Err(anyhow::anyhow!(
                "the database was not ready within {} s (database.connect_timeout_seconds): \
                 {error}",
                settings.connect_timeout_seconds
            ));
        }
        tracing::warn!(attempt, error = %error, retry_in = ?pause, "database not ready yet");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_START_PAUSE);
        attempt += 1;
    }
}

/// How long shutdown waits for the audit records still queued to be written.
const AUDIT_FLUSH_LIMIT: Duration = Duration::from_secs(10);

/// The longest pause between two tries of an unready database at start.
const MAX_START_PAUSE: Duration = Duration::from_secs(5);

fn no_answer(limit: Duration) -> StoreError {
    StoreError::Unavailable(sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("no answer within {limit:?}"),
    )))
}

/// Forgets idempotency keys past their retention, every few minutes.
async fn purge_expired_keys(store: Store, retention: Duration) {
    let mut every = tokio::time::interval(Duration::from_secs(300));
    loop {
        every.tick().await;
        let expired_before = time::OffsetDateTime::now_utc() - retention;
        match store.purge_keys(expired_before).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "forgot expired idempotency keys"),
            Err(error) => tracing::warn!(error = %error, "could not purge idempotency keys"),
        }
    }
}

/// Deletes conversations past `retention.ended_days`, and erasure tombstones past
/// `retention.tombstone_days`, and audit records past `audit.retention_days`, every
/// `retention.purge_interval_seconds`. Every replica runs it; they never delete a
/// conversation twice, nor wait on each other.
async fn enforce_retention(store: Store, retention: RetentionSettings, audit: AuditSettings) {
    let mut every =
        tokio::time::interval(Duration::from_secs(retention.purge_interval_seconds.max(1)));
    loop {
        every.tick().await;
        let now = time::OffsetDateTime::now_utc();
        if let Some(days) = retention.ended_days {
            match store
                .purge_expired(now - time::Duration::days(days.into()))
                .await
            {
                Ok(0) => {}
                Ok(purged) => {
                    crate::metrics::conversations_purged(purged as usize);
                    tracing::info!(purged, days, "deleted conversations past retention")
                }
                Err(error) => {
                    tracing::warn!(error = %error, "could not purge expired conversations")
                }
            }
        }
        let tombstones_before = now - time::Duration::days(retention.tombstone_days.into());
        match store.purge_tombstones(tombstones_before).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "forgot old erasure tombstones"),
            Err(error) => tracing::warn!(error = %error, "could not purge erasure tombstones"),
        }
        let Some(audit_before) = now.checked_sub(time::Duration::days(audit.retention_days.into()))
        else {
            continue;
        };
        match store.audit_purge(audit_before).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "deleted audit records past retention"),
            Err(error) => tracing::warn!(error = %error, "could not purge audit records"),
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
