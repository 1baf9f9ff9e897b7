//! The integration tests: one binary, so that the crate and both database drivers are
//! linked once. Each module is an area of the service, tested through the real router, a
//! real PostgreSQL (per-test databases from `#[sqlx::test]`) and the embedded SQLite store;
//! `binary`, `cli` and `embedded` run the built binary as a child process.

#[macro_use]
mod common;
mod process;
mod proxy;

mod auth;
mod binary;
mod changes;
mod cli;
mod concurrency;
mod console;
mod degraded;
mod deployment;
mod disk_full;
mod embedded;
mod erasure;
mod group_commit;
mod hostile;
mod idempotency;
mod ingest;
mod ingest_validation;
mod materialised;
mod openapi;
mod people;
mod queries;
mod resilience;
mod retention;
mod server;
mod sources;
mod stats;
mod upgrade;
mod webhooks;
