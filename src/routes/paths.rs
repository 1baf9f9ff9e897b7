//! Route templates, shared by the router and the OpenAPI document so the two cannot drift.

/// Ingest, as the vendor's curl sample and JavaScript code post it.
pub const HOOKS: &str = "/agentassist/api/v1/hooks/{botId}";
/// Ingest aliases the vendor's documentation also uses.
pub const HOOKS_ALIASES: [&str; 2] = ["/agentai/api/v1/hooks/{botId}", "/api/v1/hooks/{botId}"];
/// SPEC 9: the bots a caller may read.
pub const BOTS: &str = "/api/v1/bots";
pub const CONVERSATIONS: &str = "/api/v1/bots/{botId}/conversations";
pub const CONVERSATION: &str = "/api/v1/bots/{botId}/conversations/{conversationId}";
pub const EVENTS: &str = "/api/v1/bots/{botId}/conversations/{conversationId}/events";
pub const TRANSFER_DATA: &str = "/api/v1/bots/{botId}/conversations/{conversationId}/transfer-data";
pub const STINTS: &str = "/api/v1/bots/{botId}/participants/{identity}/stints";
/// SPEC 8: the change feed and its live stream.
pub const CHANGES: &str = "/api/v1/bots/{botId}/changes";
pub const CHANGES_STREAM: &str = "/api/v1/bots/{botId}/changes/stream";
/// SPEC 11: operations metrics.
pub const STATS: &str = "/api/v1/bots/{botId}/stats";
pub const STATS_NOW: &str = "/api/v1/bots/{botId}/stats/now";
/// SPEC 12: the webhook endpoints, for `admin`.
pub const WEBHOOKS: &str = "/api/v1/webhooks";
/// SPEC 13: who read which conversation, for `audit`.
pub const AUDIT: &str = "/api/v1/audit";
/// Bright Pattern's `ON_NEW_INTERACTION` (SPEC 7.1).
pub const INTERACTIONS: &str = "/api/v1/bots/{botId}/interactions";
/// The Salesforce bot's escalation and the client's transfer outcome (SPEC 7.2).
pub const BOT_MESSAGES: &str = "/api/v1/bots/{botId}/conversations/{conversationId}/bot-messages";
pub const HEALTHZ: &str = "/healthz";
pub const READYZ: &str = "/readyz";
pub const METRICS: &str = "/metrics";
pub const OPENAPI: &str = "/openapi.json";
/// SPEC 9: the ops console's page and files.
pub const CONSOLE: &str = "/console";
pub const CONSOLE_INDEX: &str = "/console/";
pub const CONSOLE_FILES: &str = "/console/{*path}";
/// SPEC 13: the identity provider the console signs people in with.
pub const CONSOLE_SIGN_IN: &str = "/console/sign-in.json";
