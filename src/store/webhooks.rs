//! Where each webhook endpoint is in the change feed, and how its delivery goes (SPEC 12).
//! The same SQL on both stores: times are integer microseconds and positions the feed's
//! JSON, as the stats keep theirs.
//!
//! A bot's position only moves by compare-and-set: whoever delivered the items after the
//! position it read may move it past them. So a replay that moves it back, or another
//! replica that moved it on, makes the write fail, and the deliverer reads it again; nothing
//! is ever marked delivered that was not.

use super::codec::{Bind, Sql, at_micros, micros_at, now_micros};
use super::{FeedPosition, Store, StoreError};
use std::time::Duration;
use time::OffsetDateTime;

/// How an endpoint's delivery goes.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookRecord {
    /// `active`, `retrying` or `disabled`.
    pub state: String,
    /// Where a bot's feed starts when the endpoint has no position in it yet.
    pub start_position: FeedPosition,
    /// Bumped by `enable` and `replay`, so that the replica delivering reads again.
    pub generation: i64,
    /// Failed attempts of the item that has failed most since the last success.
    pub attempts: u32,
    pub next_attempt_at: Option<OffsetDateTime>,
    pub last_attempt_at: Option<OffsetDateTime>,
    pub last_error: Option<String>,
}

/// Where an endpoint is in one bot's feed.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookPosition {
    pub bot_id: String,
    pub position: FeedPosition,
    /// When its last item was delivered; `None` before the first.
    pub delivered_at: Option<OffsetDateTime>,
}

/// A failed attempt, as the endpoint's state records it.
#[derive(Debug, Clone)]
pub struct FailedAttempt {
    pub at: OffsetDateTime,
    pub attempts: u32,
    /// `None`: the endpoint is disabled (410, or the schedule ran out).
    pub next_attempt_at: Option<OffsetDateTime>,
    pub error: String,
}

/// How far an endpoint is, over the bots it follows.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookStatus {
    /// `None` before a replica first took the endpoint.
    pub record: Option<WebhookRecord>,
    /// The furthest position delivered in any bot's feed.
    pub position: Option<FeedPosition>,
    /// Items after the endpoint's position in each bot's feed, added up.
    pub lag_items: i64,
    /// When the oldest of those was stored.
    pub oldest_waiting: Option<OffsetDateTime>,
    /// The last attempt, failed or delivered.
    pub last_attempt_at: Option<OffsetDateTime>,
}

#[derive(sqlx::FromRow)]
struct EndpointRow {
    state: String,
    start_position: String,
    generation: i64,
    attempts: i64,
    next_attempt_at: Option<i64>,
    last_attempt_at: Option<i64>,
    last_error: Option<String>,
}

#[derive(sqlx::FromRow)]
struct PositionRow {
    bot_id: String,
    position: String,
    delivered_at: Option<i64>,
}

impl Store {
    /// Registers endpoint `name`, starting at `start`, unless it is known already (its
    /// position then stays where it was, whatever the config now says).
    pub async fn webhook_register(
        &self,
        name: &str,
        start: &FeedPosition,
    ) -> Result<(), StoreError> {
        self.execute_sql(statement(
            "INSERT INTO webhook_endpoints (name, start_position, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO NOTHING",
            [text(name), text(&position_text(start)), now()],
        ))
        .await
        .map(drop)
    }

    /// Endpoint `name`'s state, if it was ever registered.
    pub async fn webhook(&self, name: &str) -> Result<Option<WebhookRecord>, StoreError> {
        let row: Option<EndpointRow> = self
            .fetch_rows(statement(
                "SELECT state, start_position, generation, attempts, next_attempt_at,
                        last_attempt_at, last_error
                 FROM webhook_endpoints WHERE name = $1",
                [text(name)],
            ))
            .await?
            .pop();
        row.map(|row| {
            Ok(WebhookRecord {
                state: row.state,
                start_position: parse_position(&row.start_position)?,
                generation: row.generation,
                attempts: u32::try_from(row.attempts).unwrap_or(0),
                next_attempt_at: row.next_attempt_at.map(at_micros),
                last_attempt_at: row.last_attempt_at.map(at_micros),
                last_error: row.last_error,
            })
        })
        .transpose()
    }

    /// Endpoint `name`'s position in each bot's feed it has started on, by bot.
    pub async fn webhook_positions(&self, name: &str) -> Result<Vec<WebhookPosition>, StoreError> {
        let rows: Vec<PositionRow> = self
            .fetch_rows(statement(
                "SELECT bot_id, position, delivered_at FROM webhook_positions
                 WHERE name = $1 ORDER BY bot_id",
                [text(name)],
            ))
            .await?;
        rows.into_iter()
            .map(|row| {
                Ok(WebhookPosition {
                    bot_id: row.bot_id,
                    position: parse_position(&row.position)?,
                    delivered_at: row.delivered_at.map(at_micros),
                })
            })
            .collect()
    }

    /// Endpoint `name`'s position in `bot_id`'s feed, starting it there (at the endpoint's
    /// start) when it has none.
    pub async fn webhook_position(
        &self,
        name: &str,
        bot_id: &str,
    ) -> Result<FeedPosition, StoreError> {
        self.execute_sql(statement(
            "INSERT INTO webhook_positions (name, bot_id, position)
             SELECT name, $2, start_position FROM webhook_endpoints WHERE name = $1
             ON CONFLICT (name, bot_id) DO NOTHING",
            [text(name), text(bot_id)],
        ))
        .await?;
        let row: Option<(String,)> = self
            .fetch_rows(statement(
                "SELECT position FROM webhook_positions WHERE name = $1 AND bot_id = $2",
                [text(name), text(bot_id)],
            ))
            .await?
            .pop();
        let position = row.ok_or_else(|| anyhow::anyhow!("webhook {name} is not registered"))?;
        parse_position(&position.0)
    }

    /// Moves `bot_id`'s position from `from` (where the delivery read it) to `to`, past the
    /// items delivered; false when it is no longer at `from` (a replay, or another replica).
    pub async fn webhook_advance(
        &self,
        name: &str,
        bot_id: &str,
        from: &FeedPosition,
        to: &FeedPosition,
    ) -> Result<bool, StoreError> {
        let changed = self
            .execute_sql(statement(
                "UPDATE webhook_positions SET position = $4, delivered_at = $5
                 WHERE name = $1 AND bot_id = $2 AND position = $3",
                [
                    text(name),
                    text(bot_id),
                    text(&position_text(from)),
                    text(&position_text(to)),
                    now(),
                ],
            ))
            .await?;
        Ok(changed == 1)
    }

    /// Takes endpoint `name` for `owner` until `lease` from now, or keeps it: true when
    /// `owner` holds it. Another replica may take it once it has not been renewed in time.
    pub async fn webhook_lease(
        &self,
        name: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let now = micros_at(OffsetDateTime::now_utc());
        let until = now + i64::try_from(lease.as_micros()).unwrap_or(i64::MAX / 2);
        let changed = self
            .execute_sql(statement(
                "UPDATE webhook_endpoints SET lease_owner = $2, lease_until = $3
                 WHERE name = $1 AND (lease_owner = $2 OR lease_owner IS NULL OR lease_until < $4)",
                [text(name), text(owner), Bind::Int(until), Bind::Int(now)],
            ))
            .await?;
        Ok(changed == 1)
    }

    /// Lets endpoint `name` go, so that another replica takes it at once (at shutdown).
    pub async fn webhook_release(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        self.execute_sql(statement(
            "UPDATE webhook_endpoints SET lease_owner = NULL, lease_until = 0
             WHERE name = $1 AND lease_owner = $2",
            [text(name), text(owner)],
        ))
        .await
        .map(drop)
    }

    /// Records a 2xx: the endpoint is active again, unless disabled meanwhile.
    pub async fn webhook_succeeded(&self, name: &str, generation: i64) -> Result<(), StoreError> {
        self.execute_sql(statement(
            "UPDATE webhook_endpoints
             SET state = 'active', attempts = 0, next_attempt_at = NULL, last_attempt_at = $3
             WHERE name = $1 AND generation = $2 AND state <> 'disabled'",
            [text(name), Bind::Int(generation), now()],
        ))
        .await
        .map(drop)
    }

    /// Records a failed attempt: `retrying`, or `disabled` when no attempt follows.
    pub async fn webhook_failed(
        &self,
        name: &str,
        generation: i64,
        failed: &FailedAttempt,
    ) -> Result<(), StoreError> {
        let state = if failed.next_attempt_at.is_some() {
            "retrying"
        } else {
            "disabled"
        };
        self.execute_sql(statement(
            "UPDATE webhook_endpoints
             SET state = CASE WHEN state = 'disabled' THEN state ELSE $3 END,
                 attempts = CASE WHEN attempts > $4 THEN attempts ELSE $4 END,
                 next_attempt_at = $5, last_attempt_at = $6, last_error = $7
             WHERE name = $1 AND generation = $2",
            [
                text(name),
                Bind::Int(generation),
                text(state),
                Bind::Int(i64::from(failed.attempts)),
                failed
                    .next_attempt_at
                    .map_or(Bind::NoInt, |at| Bind::Int(micros_at(at))),
                Bind::Int(micros_at(failed.at)),
                text(&failed.error),
            ],
        ))
        .await
        .map(drop)
    }

    /// Resumes a disabled (or retrying) endpoint where it stopped: false when it is unknown.
    pub async fn webhook_enable(&self, name: &str) -> Result<bool, StoreError> {
        let changed = self
            .execute_sql(statement(
                "UPDATE webhook_endpoints
                 SET state = 'active', attempts = 0, next_attempt_at = NULL,
                     generation = generation + 1
                 WHERE name = $1",
                [text(name)],
            ))
            .await?;
        Ok(changed == 1)
    }

    /// Sends the items after `from` again: every position of the endpoint past it moves
    /// back to it (one behind stays, so nothing is skipped), and so does its start for bots
    /// it has not started on. False when the endpoint is unknown.
    pub async fn webhook_replay(
        &self,
        name: &str,
        from: &FeedPosition,
    ) -> Result<bool, StoreError> {
        let Some(endpoint) = self.webhook(name).await? else {
            return Ok(false);
        };
        for position in self.webhook_positions(name).await? {
            if position.position > *from {
                // Compare-and-set as a delivery's: one that moved it meanwhile is moved back too.
                let mut current = position.position;
                while !self
                    .webhook_advance(name, &position.bot_id, &current, from)
                    .await?
                {
                    current = self.webhook_position(name, &position.bot_id).await?;
                    if current <= *from {
                        break;
                    }
                }
            }
        }
        let start = endpoint.start_position.min(from.clone());
        self.execute_sql(statement(
            "UPDATE webhook_endpoints
             SET start_position = $2, generation = generation + 1, next_attempt_at = NULL
             WHERE name = $1",
            [text(name), text(&position_text(&start))],
        ))
        .await?;
        Ok(true)
    }

    /// Where endpoint `name` is in the feeds of `bots` (every bot when `None`).
    pub async fn webhook_status(
        &self,
        name: &str,
        bots: Option<&[String]>,
    ) -> Result<WebhookStatus, StoreError> {
        let record = self.webhook(name).await?;
        let positions = self.webhook_positions(name).await?;
        let bots: Vec<String> = match bots {
            Some(bots) => bots.to_vec(),
            None => self
                .bots(10_000)
                .await?
                .into_iter()
                .map(|bot| bot.bot_id)
                .collect(),
        };
        let start = record.as_ref().map(|record| record.start_position.clone());
        let mut status = WebhookStatus {
            position: positions.iter().map(|at| at.position.clone()).max(),
            lag_items: 0,
            oldest_waiting: None,
            last_attempt_at: positions
                .iter()
                .filter_map(|at| at.delivered_at)
                .chain(record.as_ref().and_then(|record| record.last_attempt_at))
                .max(),
            record,
        };
        for bot in &bots {
            let after = positions
                .iter()
                .find(|at| at.bot_id == *bot)
                .map(|at| at.position.clone())
                .or_else(|| start.clone());
            status.lag_items += self.events_after(bot, after.as_ref()).await?;
            if let Some(first) = self.first_event_after(bot, after.as_ref()).await? {
                status.oldest_waiting =
                    Some(status.oldest_waiting.map_or(first, |at| at.min(first)));
            }
        }
        Ok(status)
    }
}

fn statement(text: &str, binds: impl IntoIterator<Item = Bind>) -> Sql {
    Sql {
        text: text.to_owned(),
        binds: binds.into_iter().collect(),
    }
}

fn text(value: &str) -> Bind {
    Bind::Text(value.to_owned())
}

fn now() -> Bind {
    Bind::Int(now_micros())
}

fn position_text(position: &FeedPosition) -> String {
    serde_json::to_string(position).expect("a position is JSON")
}

fn parse_position(text: &str) -> Result<FeedPosition, StoreError> {
    Ok(serde_json::from_str(text)
        .map_err(|error| anyhow::anyhow!("unreadable webhook position: {error}"))?)
}
