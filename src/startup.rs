//! Builds the application from settings and serves it until a shutdown signal.

use crate::auth::AppRegistry;
use crate::config::{RetentionSettings, Settings};
use crate::routes::{AppState, router};
use crate::server;
use crate::store::{self, Store};
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Opens the store (migrating it when configured) and resolves the apps' secrets.
pub async fn build_state(settings: &Settings) -> anyhow::Result<AppState> {
    settings.server.check()?;
    let apps = AppRegistry::from_settings(&settings.auth, &settings.apps)
        .context("invalid [[apps]] or [auth] configuration")?;
    let store = store::connect(&settings.database).await?;
    if settings.database.migrate_on_start {
        store
            .migrate()
            .await
            .context("failed to apply database migrations")?;
    }
    Ok(AppState::new(
        store,
        Arc::new(apps),
        &settings.server,
        &settings.idempotency,
        &settings.changes,
    ))
}

/// Serves until SIGTERM or Ctrl-C, then lets in-flight requests finish (bounded) and
/// closes the database pool.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let state = build_state(&settings).await?;
    let store = state.store.clone();
    let hub = state.changes.clone();
    let relaying = tokio::spawn({
        let (store, hub) = (store.clone(), hub.clone());
        async move { store.relay_changes(&hub).await }
    });
    let purging = tokio::spawn(purge_expired_keys(
        store.clone(),
        Duration::from_secs(settings.idempotency.retention_seconds),
    ));
    let retaining = tokio::spawn(enforce_retention(store.clone(), settings.retention.clone()));
    let app = router(state, &settings.server);
    let upkeep = crate::metrics::spawn_upkeep();
    let listener = TcpListener::bind(settings.server.bind)
        .await
        .with_context(|| format!("cannot listen on {}", settings.server.bind))?;
    tracing::info!(address = %listener.local_addr()?, "listening");

    let limits = server::Limits::of(&settings.server)
        .fit_descriptor_limit(settings.database.max_connections);

    let (stopping, stopped) = tokio::sync::oneshot::channel();
    let server = server::Server::new(limits);
    let serving = server.serve(listener, app, async move {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing in-flight requests");
        // Live streams never finish by themselves.
        hub.stop();
        let _ = stopping.send(());
    });
    let grace = Duration::from_secs(settings.server.shutdown_timeout_seconds);
    tokio::select! {
        () = serving => {}
        () = async {
            if stopped.await.is_ok() {
                tokio::time::sleep(grace).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => tracing::warn!("in-flight requests did not finish within {grace:?}; stopping anyway"),
    }
    purging.abort();
    retaining.abort();
    relaying.abort();
    upkeep.abort();
    store.close().await;
    tracing::info!("stopped");
    Ok(())
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
/// `retention.tombstone_days`, every `retention.purge_interval_seconds`. Every replica runs
/// it; they never delete a conversation twice, nor wait on each other.
async fn enforce_retention(store: Store, retention: RetentionSettings) {
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
                Ok(purged) => tracing::info!(purged, days, "deleted conversations past retention"),
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
