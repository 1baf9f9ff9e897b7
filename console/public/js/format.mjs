// Times (always UTC, like the API and the service's logs), durations and labels.

const pad = (number, width = 2) => String(number).padStart(width, "0");

export function parseTime(value) {
  if (value === null || value === undefined) return null;
  const ms = Date.parse(value);
  return Number.isNaN(ms) ? null : ms;
}

/** `2026-01-02 10:00:01` (UTC). */
export function dateTime(value) {
  const ms = typeof value === "number" ? value : parseTime(value);
  if (ms === null) return "—";
  const date = new Date(ms);
  return `${date.getUTCFullYear()}-${pad(date.getUTCMonth() + 1)}-${pad(date.getUTCDate())} ${clock(ms)}`;
}

/** `10:00:01` (UTC). */
export function clock(value, withMs = false) {
  const ms = typeof value === "number" ? value : parseTime(value);
  if (ms === null) return "—";
  const date = new Date(ms);
  const base = `${pad(date.getUTCHours())}:${pad(date.getUTCMinutes())}:${pad(date.getUTCSeconds())}`;
  return withMs ? `${base}.${pad(date.getUTCMilliseconds(), 3)}` : base;
}

/** `2026-01-02` (UTC). */
export function day(value) {
  const ms = typeof value === "number" ? value : parseTime(value);
  if (ms === null) return "—";
  const date = new Date(ms);
  return `${date.getUTCFullYear()}-${pad(date.getUTCMonth() + 1)}-${pad(date.getUTCDate())}`;
}

/** `850 ms`, `12.3 s`, `3 min 11 s`, `2 h 5 min`, `3 d 4 h`. */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
  const value = Math.max(0, seconds);
  if (value < 1) return `${Math.round(value * 1000)} ms`;
  if (value < 60) return `${value < 10 ? value.toFixed(1) : Math.round(value)} s`;
  const total = Math.round(value);
  const minutes = Math.floor(total / 60);
  if (minutes < 60) return `${minutes} min ${total % 60} s`;
  const hours = Math.floor(minutes / 60);
  if (hours < 24) return `${hours} h ${minutes % 60} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

/** Compact, for tables of durations: `850ms`, `4.2s`, `42s`, `4m 12s`, `2h 5m`, `3d 4h`. */
export function shortDuration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
  const value = Math.max(0, seconds);
  if (value < 1) return `${Math.round(value * 1000)}ms`;
  if (value < 10) return `${value.toFixed(1)}s`;
  const total = Math.round(value);
  if (total < 60) return `${total}s`;
  const minutes = Math.floor(total / 60);
  if (minutes < 60) return `${minutes}m ${total % 60}s`;
  const hours = Math.floor(minutes / 60);
  if (hours < 24) return `${hours}h ${minutes % 60}m`;
  return `${Math.floor(hours / 24)}d ${hours % 24}h`;
}

/** A count the service may leave `null` (a metric the grouping cannot attribute): `—`. */
export function count(value) {
  return value === null || value === undefined ? "—" : String(value);
}

/** `0.5` → `50 %`; `null` → `—`. */
export function percent(ratio) {
  if (ratio === null || ratio === undefined || Number.isNaN(ratio)) return "—";
  const value = ratio * 100;
  return `${Number.isInteger(value) ? value : value.toFixed(1)} %`;
}

/** `<input type="datetime-local">` value (read as UTC) → RFC 3339, or null. */
export function localInputToRfc3339(value) {
  if (!value) return null;
  const withSeconds = value.length === 16 ? `${value}:00` : value;
  const ms = Date.parse(`${withSeconds}Z`);
  return Number.isNaN(ms) ? null : new Date(ms).toISOString();
}

/** RFC 3339 → `<input type="datetime-local">` value in UTC. */
export function rfc3339ToLocalInput(value) {
  const ms = parseTime(value);
  if (ms === null) return "";
  return new Date(ms).toISOString().slice(0, 19);
}

/** A participant as people read it: the name, else the identity. */
export function participantName(participant) {
  if (!participant) return "—";
  return participant.name ? participant.name : participant.identity;
}

export function plural(count, one, many = `${one}s`) {
  return `${count} ${count === 1 ? one : many}`;
}

export const ANOMALY_TEXT = {
  duplicate_entry: "entry of someone already present",
  na_entry_while_active: "NA entry while others were present",
  exit_without_entry: "exit of someone not present",
  na_exit_while_others_present: "NA exit while others stayed",
  warm_exit_left_nobody: "WARM exit left nobody present",
  entry_after_end: "entry after the conversation ended",
  closed_with_participants_present: "ended with participants present",
  transfer_outcome_without_escalation: "transfer outcome without an escalation",
  escalation_unresolved: "escalation still pending at the end",
};

export function anomalyText(code) {
  return ANOMALY_TEXT[code] ? `${code} (${ANOMALY_TEXT[code]})` : code;
}
