//! The `agentassist-hooks` command line: serve, migrate, check-config, token, openapi,
//! healthcheck, purge, webhooks.

use agentassist_hooks::auth::{AppRegistry, issue_token};
use agentassist_hooks::config::{DatabaseSettings, Settings};
use agentassist_hooks::routes::openapi;
use agentassist_hooks::routes::params::{decode_cursor, encode_cursor};
use agentassist_hooks::store::FeedPosition;
use agentassist_hooks::webhooks::Endpoint;
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
    /// See and steer the webhook endpoints (SPEC 12); running replicas act within 5 s.
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
}

#[derive(Subcommand)]
enum WebhooksCommand {
    /// Each configured endpoint: state, position, lag, last error.
    List,
    /// Resume a disabled (or retrying) endpoint where it stopped.
    Enable { name: String },
    /// Send an endpoint's items after POSITION again (a feed position, as
    /// `GET /api/v1/webhooks` or the change feed show it).
    Replay {
        name: String,
        #[arg(long = "from", value_name = "POSITION")]
        from: String,
    },
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
            settings.audit.check()?;
            agentassist_hooks::audit::Recorder::default()
                .trusting(&settings.server.trusted_proxies)?;
            AppRegistry::from_settings(&settings.auth, &settings.apps)?;
            Endpoint::all(&settings.webhooks, &settings.webhook_allow_hosts)?;
            if let Some(oidc) = &settings.auth.oidc {
                agentassist_hooks::oidc::People::new(oidc, settings.auth.leeway_seconds)
                    .context("invalid [auth.oidc] configuration")?;
            }
            println!(
                "configuration OK: {} app(s), {} webhook(s), {}, listening on {}",
                settings.apps.len(),
                settings.webhooks.len(),
                match &settings.auth.oidc {
                    Some(oidc) => format!("people sign in at {}", oidc.issuer),
                    None => "no identity provider".to_owned(),
                },
                settings.server.bind
            );
            Ok(())
        }
        Command::Purge(args) => runtime.block_on(purge(&settings, &args)),
        Command::Webhooks(command) => runtime.block_on(webhooks(&settings, command)),
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

async fn webhooks(settings: &Settings, command: WebhooksCommand) -> anyhow::Result<()> {
    let configured = |name: &str| {
        settings
            .webhooks
            .iter()
            .find(|webhook| webhook.name == name)
            .with_context(|| format!("no webhook named {name} in the config"))
    };
    let store = store::connect(&settings.database).await?;
    let outcome = async {
        match command {
            WebhooksCommand::List => {
                let now = time::OffsetDateTime::now_utc();
                println!("NAME\tSTATE\tLAG_ITEMS\tLAG_SECONDS\tPOSITION\tLAST_ERROR");
                for webhook in &settings.webhooks {
                    let every_bot = webhook.bots.iter().any(|bot| bot == "*");
                    let status = store
                        .webhook_status(
                            &webhook.name,
                            (!every_bot).then_some(webhook.bots.as_slice()),
                        )
                        .await?;
                    let record = status.record.as_ref();
                    println!(
                        "{}\t{}\t{}\t{:.0}\t{}\t{}",
                        webhook.name,
                        record.map_or("new", |record| record.state.as_str()),
                        status.lag_items,
                        status
                            .oldest_waiting
                            .map_or(0.0, |at| (now - at).as_seconds_f64().max(0.0)),
                        status
                            .position
                            .as_ref()
                            .map_or("-".to_owned(), encode_cursor),
                        record
                            .and_then(|record| record.last_error.as_deref())
                            .unwrap_or("-"),
                    );
                }
            }
            WebhooksCommand::Enable { name } => {
                configured(&name)?;
                anyhow::ensure!(
                    store.webhook_enable(&name).await?,
                    "webhook {name} has not been delivered yet: nothing to enable"
                );
                println!("webhook {name} enabled: delivery resumes where it stopped");
            }
            WebhooksCommand::Replay { name, from } => {
                configured(&name)?;
                let position: FeedPosition = decode_cursor(&from)
                    .with_context(|| format!("{from:?} is not a feed position"))?;
                anyhow::ensure!(
                    store.webhook_replay(&name, &position).await?,
                    "webhook {name} has not been delivered yet: nothing to replay"
                );
                let disabled = store
                    .webhook(&name)
                    .await?
                    .is_some_and(|record| record.state == "disabled");
                if disabled {
                    println!(
                        "webhook {name}: moved back to {from}; it is disabled, so nothing is \
                         sent until `webhooks enable {name}`"
                    );
                } else {
                    println!("webhook {name}: the items after {from} will be sent again");
                }
            }
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
