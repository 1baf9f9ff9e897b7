//! Operations metrics (SPEC 11): a bot's stats per bucket and group, as JSON or CSV, and
//! what is happening now.

use super::extract::authorize_read;
use super::params::{BOT_ID, PathParams, QueryParams, problem, reject};
use super::{AppState, paths};
use crate::auth::Caller;
use crate::domain::stats::tally::seconds;
use crate::domain::stats::{
    Bucket, BucketError, Cell, Dimension, Durations, Filters, Granularity, StatsQuery, Tally,
    buckets, local_rfc3339,
};
use crate::domain::{Anomaly, FieldError, timestamp};
use crate::error::{ApiError, Problem, ReadRefusals};
use crate::store::StatsNow;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

/// The longest range a query may cover.
const MAX_RANGE_DAYS: i64 = 400;

/// Query parameters of the stats (parsed by [`QueryParams`]).
#[derive(IntoParams)]
#[into_params(parameter_in = Query, style = Form)]
pub struct StatsParams {
    /// Start of the range (RFC 3339), included.
    pub from: OffsetDateTime,
    /// End of the range (RFC 3339), excluded; after `from`, at most 400 days later.
    pub to: OffsetDateTime,
    /// Bucket length: `PT15M`, `PT30M`, `PT1H`, `P1D`, `P7D`, or `all` (one bucket).
    #[param(default = "all", pattern = "^(PT15M|PT30M|PT1H|P1D|P7D|all)$")]
    pub granularity: Option<String>,
    /// IANA time zone of the buckets (days and weeks start at local midnight).
    #[param(default = "UTC", example = "Europe/Berlin")]
    pub time_zone: Option<String>,
    /// Up to two of `participant`, `queue`, `experience`, `language`, `service`,
    /// comma-separated.
    pub group_by: Option<String>,
    /// Only the facts of this participant (conversation counts are then `null`).
    #[param(min_length = 1)]
    pub participant: Option<String>,
    /// Only the facts of this queue (conversation counts are then `null`).
    #[param(min_length = 1)]
    pub queue: Option<String>,
    /// Only the facts of conversations with this experience (`chat`, `voice` or `email`, in
    /// any case).
    // Spelled out: ECMA-262, the dialect of OpenAPI patterns, has no inline `(?i)` flag.
    #[param(pattern = "^([Cc][Hh][Aa][Tt]|[Vv][Oo][Ii][Cc][Ee]|[Ee][Mm][Aa][Ii][Ll])$")]
    pub experience: Option<String>,
}

/// What a stats request asks, checked.
struct Asked {
    query: StatsQuery,
    from: OffsetDateTime,
    to: OffsetDateTime,
    granularity: Granularity,
    zone: TimeZone,
    zone_name: String,
}

fn asked(params: &QueryParams) -> Result<Asked, ApiError> {
    let mut problems = Vec::new();
    let from = params.time("from", &mut problems);
    let to = params.time("to", &mut problems);
    for (name, value) in [("from", &from), ("to", &to)] {
        if value.is_none() && params.get(name).is_none() {
            problems.push(problem(name, "is required"));
        }
    }
    if let (Some(from), Some(to)) = (from, to) {
        if from >= to {
            problems.push(problem("to", "must be after from"));
        } else if to - from > time::Duration::days(MAX_RANGE_DAYS) {
            problems.push(problem("to", "must be at most 400 days after from"));
        }
    }
    let granularity = match params.get("granularity") {
        None => Some(Granularity::All),
        Some(text) => Granularity::parse(text).or_else(|| {
            let names = Granularity::NAMES.join(", ");
            problems.push(problem("granularity", &format!("must be one of {names}")));
            None
        }),
    };
    let zone_name = params.get("timeZone").unwrap_or("UTC").to_owned();
    let zone = TimeZone::get(&zone_name).ok().or_else(|| {
        problems.push(problem(
            "timeZone",
            "must be an IANA time zone, e.g. Europe/Berlin",
        ));
        None
    });
    let group_by = group_by(params.get("groupBy"), &mut problems);
    let experience = params
        .non_empty("experience", &mut problems)
        .and_then(|text| {
            let known = crate::domain::Experience::parse(&text);
            if known.is_none() {
                problems.push(problem("experience", "must be one of chat, voice, email"));
            }
            known.map(|experience| experience.as_str().to_owned())
        });
    let filters = Filters {
        participant: params.non_empty("participant", &mut problems),
        queue: params.non_empty("queue", &mut problems),
        experience,
    };
    reject(problems)?;
    let (Some(from), Some(to), Some(granularity), Some(zone)) = (from, to, granularity, zone)
    else {
        unreachable!("every missing value was reported as a problem");
    };
    let buckets = buckets(instant(from), instant(to), granularity, &zone).map_err(|error| {
        let parameter = match error {
            BucketError::TooMany => "granularity",
            BucketError::OutOfRange => "from",
        };
        ApiError::InvalidQuery(vec![problem(parameter, &error.to_string())])
    })?;
    Ok(Asked {
        query: StatsQuery {
            buckets,
            group_by,
            filters,
        },
        from,
        to,
        granularity,
        zone,
        zone_name,
    })
}

fn group_by(text: Option<&str>, problems: &mut Vec<FieldError>) -> Vec<Dimension> {
    let Some(text) = text else {
        return Vec::new();
    };
    let mut dimensions = Vec::new();
    for name in text.split(',').map(str::trim) {
        match Dimension::parse(name) {
            Some(dimension) if !dimensions.contains(&dimension) => dimensions.push(dimension),
            Some(_) => problems.push(problem("groupBy", "names a dimension twice")),
            None => problems.push(problem(
                "groupBy",
                "must be up to two of participant, queue, experience, language, service",
            )),
        }
    }
    if dimensions.len() > 2 {
        problems.push(problem("groupBy", "must name at most two dimensions"));
    }
    dimensions
}

fn instant(at: OffsetDateTime) -> Timestamp {
    let micros = (at.unix_timestamp_nanos() / 1_000) as i64;
    Timestamp::from_microsecond(micros).expect("a time in UTC range is a timestamp")
}

fn to_time(at: OffsetDateTime) -> String {
    timestamp::format(at)
}

#[utoipa::path(
    get,
    path = paths::STATS,
    tag = "stats",
    operation_id = "getStats",
    summary = "A bot's operations metrics per bucket and group",
    description = "Counts, sums, minima and maxima are exact; quantiles are within 1 % of the \
nearest-rank value. Each fact counts in the bucket of one instant (a stint at its `leftAt`, a \
hop at its `at`, …; SPEC 11.1). With `Accept: text/csv`, one row per group and bucket, columns \
named by the JSON paths joined with dots.",
    params(("botId" = String, Path, description = BOT_ID), StatsParams),
    responses(
        ReadRefusals,
        (status = 200, description = "The stats.", body = StatsAnswer,
            content((StatsAnswer = "application/json"), (String = "text/csv"))),
        (status = 400, description = "A query parameter is invalid (every problem in `errors`).", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "A bot the app may not read.", body = Problem, content_type = "application/problem+json"),
    ),
    security(("token" = []))
)]
pub async fn stats(
    caller: Caller,
    State(state): State<AppState>,
    PathParams(bot_id): PathParams<String>,
    params: QueryParams,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize_read(&caller, &bot_id)?;
    let asked = asked(&params)?;
    let as_of = as_of(&state, &bot_id).await?;
    let groups = crate::stats::answer(&state.store, &bot_id, &asked.query).await?;
    let answer = StatsAnswer::new(&bot_id, &asked, as_of, groups);
    if wants_csv(&headers) {
        let body = answer.csv(&asked.query.group_by);
        return Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response());
    }
    Ok(Json(answer).into_response())
}

/// How far the stats go, after waiting (at most `stats.max_lag_seconds`) for the events
/// committed before this request to be counted.
async fn as_of(state: &AppState, bot_id: &str) -> Result<Option<OffsetDateTime>, ApiError> {
    let max_lag = Duration::from_secs(state.stats_max_lag_seconds);
    Ok(crate::stats::wait_until_counted(&state.store, &state.changes, bot_id, max_lag).await?)
}

fn wants_csv(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|media| {
            media
                .split(';')
                .next()
                .is_some_and(|kind| kind.trim().eq_ignore_ascii_case("text/csv"))
        })
}

/// The stats of a bot (SPEC 11.1).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatsAnswer {
    bot_id: String,
    from: String,
    to: String,
    granularity: String,
    time_zone: String,
    /// Every event committed before this time is counted; `null` until the first count.
    as_of: Option<String>,
    results: Vec<GroupStats>,
}

/// One group's buckets; a bucket with nothing in it is left out.
#[derive(Debug, Serialize, ToSchema)]
pub struct GroupStats {
    /// The group's value of each `groupBy` dimension (`null`: not known); `{}` ungrouped.
    #[schema(value_type = Object)]
    group: Map<String, Value>,
    buckets: Vec<BucketStats>,
}

impl StatsAnswer {
    fn new(
        bot_id: &str,
        asked: &Asked,
        as_of: Option<OffsetDateTime>,
        groups: BTreeMap<Vec<Option<String>>, BTreeMap<usize, Cell>>,
    ) -> Self {
        let query = &asked.query;
        let shape = Shape {
            conversations: matches!(
                query.conversation_counts(),
                crate::domain::stats::ConversationCounts::Grouped { .. }
            ),
            in_and_out: query.group_by.iter().any(|d| d.is_of_participants()),
        };
        let results = groups
            .into_iter()
            .filter_map(|(values, cells)| {
                let buckets: Vec<BucketStats> = cells
                    .into_iter()
                    .filter(|(_, cell)| !shape.is_empty(cell))
                    .map(|(index, cell)| shape.bucket(&query.buckets[index], &asked.zone, &cell))
                    .collect();
                let group = query
                    .group_by
                    .iter()
                    .zip(values)
                    .map(|(dimension, value)| (dimension.as_str().to_owned(), json!(value)))
                    .collect();
                (!buckets.is_empty()).then_some(GroupStats { group, buckets })
            })
            .collect();
        Self {
            bot_id: bot_id.to_owned(),
            from: to_time(asked.from),
            to: to_time(asked.to),
            granularity: asked.granularity.name().to_owned(),
            time_zone: asked.zone_name.clone(),
            as_of: as_of.map(to_time),
            results,
        }
    }

    /// One row per group and bucket; columns named by the JSON paths joined with dots.
    fn csv(&self, group_by: &[Dimension]) -> String {
        let mut columns: Vec<String> = group_by
            .iter()
            .map(|dimension| format!("group.{}", dimension.as_str()))
            .collect();
        columns.extend(bucket_columns());
        let mut out = csv_row(columns.iter().map(String::as_str));
        for group in &self.results {
            for bucket in &group.buckets {
                let bucket = serde_json::to_value(bucket).unwrap_or_default();
                let mut cells: Vec<String> = group_by
                    .iter()
                    .map(|dimension| csv_value(group.group.get(dimension.as_str())))
                    .collect();
                for column in bucket_columns() {
                    let path = format!("/{}", column.replace('.', "/"));
                    let value = bucket.pointer(&path).or_else(|| {
                        // An anomaly code that did not happen in the bucket.
                        column.starts_with("anomalies.").then_some(&Value::Null)
                    });
                    cells.push(match value {
                        Some(Value::Null) if column.starts_with("anomalies.") => "0".to_owned(),
                        other => csv_value(other),
                    });
                }
                out.push_str(&csv_row(cells.iter().map(String::as_str)));
            }
        }
        out
    }
}

/// The columns of a bucket, in order.
fn bucket_columns() -> Vec<String> {
    let fixed = [
        "start",
        "end",
        "conversations.started",
        "conversations.ended",
        "conversations.handled",
        "stints.count",
        "stints.sumSeconds",
        "stints.minSeconds",
        "stints.maxSeconds",
        "stints.p50Seconds",
        "stints.p90Seconds",
        "stints.p99Seconds",
        "timeToFirstAgent.count",
        "timeToFirstAgent.sumSeconds",
        "timeToFirstAgent.p50Seconds",
        "timeToFirstAgent.p90Seconds",
        "timeToFirstAgent.maxSeconds",
        "transfers.cold",
        "transfers.warm",
        "transfers.redial",
        "transfers.escalated",
        "transfers.escalationsCompleted",
        "transfers.escalationsFailed",
        "transfers.in",
        "transfers.out",
    ];
    let mut columns: Vec<String> = fixed.iter().map(|column| (*column).to_owned()).collect();
    columns.extend(
        Anomaly::ALL
            .iter()
            .map(|code| format!("anomalies.{}", code.as_str())),
    );
    columns.extend([
        "transferRate".to_owned(),
        "escalationSuccessRate".to_owned(),
    ]);
    columns
}

fn csv_value(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    }
}

/// A CSV line (RFC 4180): a cell with a comma, quote or line break is quoted.
fn csv_row<'a>(cells: impl Iterator<Item = &'a str>) -> String {
    let mut line = cells
        .map(|cell| {
            if cell.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", cell.replace('"', "\"\""))
            } else {
                cell.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(",");
    line.push_str("\r\n");
    line
}

/// Which metrics a query's grouping can attribute.
struct Shape {
    conversations: bool,
    in_and_out: bool,
}

impl Shape {
    /// Nothing the answer shows is in the cell.
    fn is_empty(&self, cell: &Cell) -> bool {
        let tally = &cell.tally;
        let shown = Tally {
            started: if self.conversations { tally.started } else { 0 },
            ended: if self.conversations { tally.ended } else { 0 },
            hops_in: if self.in_and_out { tally.hops_in } else { 0 },
            hops_out: if self.in_and_out { tally.hops_out } else { 0 },
            ..tally.clone()
        };
        shown.is_empty() && (!self.conversations || cell.handled == 0)
    }

    fn bucket(&self, bucket: &Bucket, zone: &TimeZone, cell: &Cell) -> BucketStats {
        let tally = &cell.tally;
        let count = |n: u64| self.conversations.then_some(n);
        let moved = |n: u64| self.in_and_out.then_some(n);
        let handled = count(cell.handled);
        let transfer_rate = handled
            .filter(|handled| *handled > 0)
            .map(|handled| (tally.cold + tally.warm) as f64 / handled as f64);
        let outcomes = tally.completed + tally.failed;
        let success_rate = (outcomes > 0).then(|| tally.completed as f64 / outcomes as f64);
        BucketStats {
            start: local_rfc3339(bucket.start, zone),
            end: local_rfc3339(bucket.end, zone),
            conversations: BucketConversations {
                started: count(tally.started),
                ended: count(tally.ended),
                handled,
            },
            stints: BucketStints::of(&tally.stints),
            time_to_first_agent: BucketFirstAgent::of(&tally.first_agent),
            transfers: BucketTransfers {
                cold: tally.cold,
                warm: tally.warm,
                redial: tally.redial,
                escalated: tally.escalated,
                escalations_completed: tally.completed,
                escalations_failed: tally.failed,
                hops_in: moved(tally.hops_in),
                hops_out: moved(tally.hops_out),
            },
            anomalies: tally.anomalies.clone(),
            transfer_rate,
            escalation_success_rate: success_rate,
        }
    }
}

/// One bucket of a group (SPEC 11.1); `null` where the grouping cannot attribute a metric.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BucketStats {
    start: String,
    end: String,
    conversations: BucketConversations,
    stints: BucketStints,
    time_to_first_agent: BucketFirstAgent,
    transfers: BucketTransfers,
    /// Anomalies by code; a code that did not happen is left out.
    #[schema(value_type = BTreeMap<String, u64>)]
    anomalies: BTreeMap<Anomaly, u64>,
    transfer_rate: Option<f64>,
    escalation_success_rate: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BucketConversations {
    started: Option<u64>,
    ended: Option<u64>,
    handled: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BucketStints {
    count: u64,
    sum_seconds: f64,
    min_seconds: Option<f64>,
    max_seconds: Option<f64>,
    p50_seconds: Option<f64>,
    p90_seconds: Option<f64>,
    p99_seconds: Option<f64>,
}

impl BucketStints {
    fn of(durations: &Durations) -> Self {
        Self {
            count: durations.count,
            sum_seconds: seconds(durations.sum_micros),
            min_seconds: durations.min_micros.map(seconds),
            max_seconds: durations.max_micros.map(seconds),
            p50_seconds: durations.quantile_seconds(0.5),
            p90_seconds: durations.quantile_seconds(0.9),
            p99_seconds: durations.quantile_seconds(0.99),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BucketFirstAgent {
    count: u64,
    sum_seconds: f64,
    p50_seconds: Option<f64>,
    p90_seconds: Option<f64>,
    max_seconds: Option<f64>,
}

impl BucketFirstAgent {
    fn of(durations: &Durations) -> Self {
        Self {
            count: durations.count,
            sum_seconds: seconds(durations.sum_micros),
            p50_seconds: durations.quantile_seconds(0.5),
            p90_seconds: durations.quantile_seconds(0.9),
            max_seconds: durations.max_micros.map(seconds),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BucketTransfers {
    cold: u64,
    warm: u64,
    redial: u64,
    escalated: u64,
    escalations_completed: u64,
    escalations_failed: u64,
    /// Hops into the group (grouped by participant or queue, else `null`).
    #[serde(rename = "in")]
    hops_in: Option<u64>,
    /// Hops out of the group (grouped by participant or queue, else `null`).
    #[serde(rename = "out")]
    hops_out: Option<u64>,
}

/// What is happening now in a bot's conversations (SPEC 11.2).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NowAnswer {
    /// Every event committed before this time is counted; `null` until the first count.
    as_of: Option<String>,
    conversations: NowConversations,
    participants_present: i64,
    by_queue: Vec<QueueNow>,
    longest_open_stint: Option<OpenStint>,
    oldest_idle_conversation: Option<IdleConversation>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NowConversations {
    active: i64,
    idle: i64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueNow {
    /// `null`: participants whose entry named no queue.
    queue: Option<String>,
    present: i64,
    active_conversations: i64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpenStint {
    identity: String,
    conversation_id: String,
    joined_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IdleConversation {
    conversation_id: String,
    /// The idle conversation's `lastEventAt`.
    since: String,
}

impl NowAnswer {
    fn new(now: StatsNow, as_of: Option<OffsetDateTime>) -> Self {
        Self {
            as_of: as_of.map(to_time),
            conversations: NowConversations {
                active: now.active,
                idle: now.idle,
            },
            participants_present: now.present,
            by_queue: now
                .by_queue
                .into_iter()
                .map(|(queue, present, active_conversations)| QueueNow {
                    queue,
                    present,
                    active_conversations,
                })
                .collect(),
            longest_open_stint: now.longest_open_stint.map(
                |(identity, conversation_id, joined_at)| OpenStint {
                    identity,
                    conversation_id,
                    joined_at: to_time(joined_at),
                },
            ),
            oldest_idle_conversation: now.oldest_idle.map(|(conversation_id, since)| {
                IdleConversation {
                    conversation_id,
                    since: to_time(since),
                }
            }),
        }
    }
}

#[utoipa::path(
    get,
    path = paths::STATS_NOW,
    tag = "stats",
    operation_id = "getStatsNow",
    summary = "What is happening now in a bot's conversations",
    params(("botId" = String, Path, description = BOT_ID)),
    responses(
        ReadRefusals,
        (status = 200, description = "Conversations active and idle, who is present, by queue.", body = NowAnswer),
        (status = 404, description = "A bot the app may not read.", body = Problem, content_type = "application/problem+json"),
    ),
    security(("token" = []))
)]
pub async fn now(
    caller: Caller,
    State(state): State<AppState>,
    PathParams(bot_id): PathParams<String>,
) -> Result<Json<NowAnswer>, ApiError> {
    authorize_read(&caller, &bot_id)?;
    let as_of = as_of(&state, &bot_id).await?;
    let now = state.store.stats_now(&bot_id).await?;
    Ok(Json(NowAnswer::new(now, as_of)))
}
