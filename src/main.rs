//! The `agentassist-hooks` command line: serve, migrate, check-config, token, openapi,
//! healthcheck, purge.

use agentassist_hooks::auth::{AppRegistry, issue_token};
use agentassist_hooks::config::{DatabaseSettings, Settings};
use agentassist_hooks::routes::openapi;
use agentassist_hooks::{probe, startup, store, telemetry};
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    version,
    about = "Kore.ai Agent AI internal-transfer hooks and participant timelines"
)]
struct Cli {
    /// A config file layered over config/default.toml.
    #[arg(long, global = true, env = "AGENTASSIST_HOOKS_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP service (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Load and check the configuration, including every app's secrets, then exit.
    CheckConfig,
    /// Print a JWT the service accepts, for curl tests.
    Token(TokenArgs),
    /// Print the OpenAPI document (as served at /openapi.json and kept in docs/openapi.json).
    Openapi,
    /// GET a URL of the running service (the container's health check); exit 0 on a 2xx
    /// answer within 2 s, 1 otherwise.
    Healthcheck(HealthcheckArgs),
    /// Delete the conversations past `retention.ended_days` now (the service also does it
    /// in the background), or with --dry-run only show what would go.
    Purge(PurgeArgs),
}

#[derive(Args)]
struct PurgeArgs {
    /// Show what would be deleted; delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// Days instead of the configured `retention.ended_days`.
    #[arg(long)]
    ended_days: Option<u32>,
}

#[derive(Args)]
struct HealthcheckArgs {
    /// The URL to ask (http only).
    #[arg(long, default_value = probe::DEFAULT_URL)]
    url: String,
}

#[derive(Args)]
struct TokenArgs {
    /// The app's id (the vendor's Client ID); sent as claim `appId`.
    #[arg(long)]
    app_id: String,
    /// Env var holding the app's secret.
    #[arg(
        long,
        conflicts_with = "secret_file",
        required_unless_present = "secret_file"
    )]
    secret_env: Option<String>,
    /// File holding the app's secret.
    #[arg(long)]
    secret_file: Option<PathBuf>,
    /// Lifetime in seconds (claim `exp`); 0 issues a token without `exp`.
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let command = cli.command.unwrap_or(Command::Serve);
    match command {
        Command::Token(args) => {
            println!("{}", token(&args)?);
            return Ok(());
        }
        Command::Openapi => {
            print!("{}", openapi::json());
            return Ok(());
        }
        Command::Healthcheck(args) => {
            println!("{}", probe::check(&args.url, Duration::from_secs(2))?);
            return Ok(());
        }
        _ => {}
    }
    let settings = Settings::load(cli.config.as_deref())?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    match command {
        Command::Serve => {
            // Outside the runtime: the span exporter blocks on a thread of its own.
            let _telemetry = telemetry::init(&settings.log, &settings.telemetry);
            runtime.block_on(startup::serve(settings))
        }
        Command::Migrate => {
            let _telemetry = telemetry::init(&settings.log, &settings.telemetry);
            runtime.block_on(async {
                let store = store::connect(&settings.database).await?;
                let database = DatabaseSettings {
                    migrate_on_start: true,
                    ..settings.database.clone()
                };
                let migrated = startup::prepare_database(&store, &database).await;
                store.close().await;
                migrated.context("migration failed")?;
                println!("migrations applied");
                Ok(())
            })
        }
        Command::CheckConfig => {
            settings.server.check()?;
            AppRegistry::from_settings(&settings.auth, &settings.apps)?;
            println!(
                "configuration OK: {} app(s), listening on {}",
                settings.apps.len(),
                settings.server.bind
            );
            Ok(())
        }
        Command::Purge(args) => runtime.block_on(purge(&settings, &args)),
        Command::Token(_) | Command::Openapi | Command::Healthcheck(_) => {
            unreachable!("handled above")
        }
    }
}

async fn purge(settings: &Settings, args: &PurgeArgs) -> anyhow::Result<()> {
    let days = args.ended_days.or(settings.retention.ended_days).context(
        "retention.ended_days is not set, so nothing expires; set it, or pass --ended-days",
    )?;
    let ended_before = time::OffsetDateTime::now_utc() - time::Duration::days(days.into());
    let since = ended_before
        .format(&time::format_description::well_known::Rfc3339)
        .context("cannot format the limit")?;
    let store = store::connect(&settings.database).await?;
    let outcome = async {
        if args.dry_run {
            let expired = store.expired(ended_before).await?;
            println!(
                "dry run: {} conversation(s) with {} event(s), nobody present and no event since \
                 {since} ({days} days), would be deleted",
                expired.conversations, expired.events
            );
        } else {
            let purged = store.purge_expired(ended_before).await?;
            println!(
                "deleted {purged} conversation(s) with nobody present and no event since {since} \
                 ({days} days)"
            );
        }
        anyhow::Ok(())
    }
    .await;
    store.close().await;
    outcome
}

fn token(args: &TokenArgs) -> anyhow::Result<String> {
    let secret = match (&args.secret_env, &args.secret_file) {
        (Some(name), _) => {
            std::env::var(name).with_context(|| format!("env var {name} is not set"))?
        }
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .trim_end_matches(['\r', '\n'])
            .to_owned(),
        (None, None) => anyhow::bail!("give --secret-env or --secret-file"),
    };
    anyhow::ensure!(!secret.is_empty(), "the secret is empty");
    let ttl = (args.ttl > 0).then_some(args.ttl);
    issue_token(&args.app_id, secret.as_bytes(), ttl)
}
