//! agentassist-hooks: ingests Kore.ai Agent AI internal-transfer hooks and keeps
//! per-conversation participant timelines for operations staff.

/// Who read which conversation: the audit log's records, written off the request path.
pub mod audit;
/// App registry, JWT verification and the authenticated-caller extractor.
pub mod auth;
/// Wake-ups of the live change streams, on this replica and across replicas.
pub mod changes;
/// Typed settings layered from files and the environment.
pub mod config;
/// Validated hook events and the pure timeline fold.
pub mod domain;
/// The one HTTP error type, written as problem+json.
pub mod error;
/// Prometheus metrics: names, descriptions and recording.
pub mod metrics;
/// People's tokens from the organisation's OpenID Connect provider.
pub mod oidc;
/// The TLS the service's own HTTP clients share.
pub mod outbound;
/// The `healthcheck` command's HTTP probe (the container image has no curl).
pub mod probe;
/// Routes and the router with its middleware.
pub mod routes;
/// The HTTP/1 server: connection limit, header, idle and write timeouts.
pub mod server;
/// Building and serving the application.
pub mod startup;
/// Operations metrics: the worker that counts the change feed, and a query's answer.
pub mod stats;
/// The store over its two backends, PostgreSQL and SQLite.
pub mod store;
/// Logging setup.
pub mod telemetry;
/// Webhooks: the change feed pushed to subscribers.
pub mod webhooks;
