// Time zones for the overview page: the browser's zone, local calendar arithmetic in any
// IANA zone (with the browser's own time zone data, through Intl), and labels read from
// the RFC 3339 strings the stats API returns with the zone's offset.

const HOUR_MS = 3600000;
const DAY_MS = 86400000;
const WEEKDAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

const pad = (number, width = 2) => String(number).padStart(width, "0");

/** The zone this browser runs in (`UTC` when it cannot tell). */
export function browserZone() {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  } catch {
    return "UTC";
  }
}

/** Whether this browser knows the zone (the service may still refuse one it does not know). */
export function isZone(zone) {
  if (typeof zone !== "string" || !zone) return false;
  try {
    new Intl.DateTimeFormat("en-US", { timeZone: zone });
    return true;
  } catch {
    return false;
  }
}

/** Every zone this browser knows, when it can list them. */
export function knownZones() {
  try {
    return Intl.supportedValuesOf("timeZone");
  } catch {
    return [];
  }
}

const formatters = new Map();

function formatter(zone) {
  let format = formatters.get(zone);
  if (!format) {
    format = new Intl.DateTimeFormat("en-US", {
      timeZone: zone,
      hourCycle: "h23",
      year: "numeric",
      month: "2-digit",
      day: "2-digit",
      hour: "2-digit",
      minute: "2-digit",
      second: "2-digit",
    });
    formatters.set(zone, format);
  }
  return format;
}

/** The wall-clock reading of an instant in `zone`: {year, month (1–12), day, hour, minute, second}. */
export function localParts(ms, zone) {
  const parts = {};
  for (const { type, value } of formatter(zone).formatToParts(new Date(ms))) parts[type] = value;
  return {
    year: Number(parts.year),
    month: Number(parts.month),
    day: Number(parts.day),
    hour: Number(parts.hour) % 24,
    minute: Number(parts.minute),
    second: Number(parts.second),
  };
}

/** The zone's offset from UTC at an instant, in ms (Kathmandu: +20,700,000). */
export function offsetMs(ms, zone) {
  const whole = Math.floor(ms / 1000) * 1000;
  const local = localParts(whole, zone);
  return Date.UTC(local.year, local.month - 1, local.day, local.hour, local.minute, local.second) - whole;
}

/** `+05:45`, `-04:00`, `+00:00`. */
export function offsetText(offset) {
  const minutes = Math.round(Math.abs(offset) / 60000);
  return `${offset < 0 ? "-" : "+"}${pad(Math.floor(minutes / 60))}:${pad(minutes % 60)}`;
}

/** The instant a wall-clock reading in `zone` names (the later one when a DST change skips it). */
export function zonedInstant(year, month, day, hour = 0, minute = 0, zone = "UTC") {
  const wall = Date.UTC(year, month - 1, day, hour, minute);
  const first = wall - offsetMs(wall, zone);
  const second = wall - offsetMs(first, zone);
  return second;
}

/** The start of the local hour holding `ms`. */
export function startOfHour(ms, zone) {
  const offset = offsetMs(ms, zone);
  return Math.floor((ms + offset) / HOUR_MS) * HOUR_MS - offset;
}

/** The start of the local day holding `ms`. */
export function startOfDay(ms, zone) {
  const { year, month, day } = localParts(ms, zone);
  return zonedInstant(year, month, day, 0, 0, zone);
}

/** The start of the local day `days` after the one holding `ms`. */
export function addDays(ms, days, zone) {
  const { year, month, day } = localParts(ms, zone);
  const date = new Date(Date.UTC(year, month - 1, day + days));
  return zonedInstant(date.getUTCFullYear(), date.getUTCMonth() + 1, date.getUTCDate(), 0, 0, zone);
}

/** The start of the local week (Monday) holding `ms`. */
export function startOfWeek(ms, zone) {
  const { year, month, day } = localParts(ms, zone);
  const weekday = new Date(Date.UTC(year, month - 1, day)).getUTCDay();
  return addDays(ms, -((weekday + 6) % 7), zone);
}

/** `YYYY-MM-DD` of the local day holding `ms` (a `<input type="date">` value). */
export function localDate(ms, zone) {
  const { year, month, day } = localParts(ms, zone);
  return `${pad(year, 4)}-${pad(month)}-${pad(day)}`;
}

/** `YYYY-MM-DD` → the instant its local midnight in `zone` starts, or null. */
export function dateStart(text, zone) {
  const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(text ?? "");
  if (!match) return null;
  const [year, month, day] = match.slice(1).map(Number);
  if (month < 1 || month > 12 || day < 1 || day > 31) return null;
  return zonedInstant(year, month, day, 0, 0, zone);
}

/** An instant as RFC 3339 with the zone's offset, like the service writes a bucket's `start`. */
export function localRfc3339(ms, zone) {
  const { year, month, day, hour, minute, second } = localParts(ms, zone);
  return `${pad(year, 4)}-${pad(month)}-${pad(day)}T${pad(hour)}:${pad(minute)}:${pad(second)}${offsetText(offsetMs(ms, zone))}`;
}

/**
 * The local reading written in an RFC 3339 string with an offset (`2026-12-07T09:00:00+01:00`
 * → 7 Dec, 09:00, +01:00), without converting it: the label is what the service counted in.
 */
export function readLocal(text) {
  const match = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?([Zz]|[+-]\d{2}:?\d{2})$/.exec(
    text ?? "",
  );
  if (!match) return null;
  const [year, month, day, hour, minute] = match.slice(1, 6).map(Number);
  const offset = /^[Zz]$/.test(match[7]) ? "+00:00" : match[7].replace(/^([+-]\d{2})(\d{2})$/, "$1:$2");
  const weekday = new Date(Date.UTC(year, month - 1, day)).getUTCDay();
  return {
    year,
    month,
    day,
    hour,
    minute,
    offset,
    date: `${pad(year, 4)}-${pad(month)}-${pad(day)}`,
    time: `${pad(hour)}:${pad(minute)}`,
    /** `Mon 7 Dec` */
    dayLabel: `${WEEKDAYS[weekday]} ${day} ${MONTHS[month - 1]}`,
    /** `7 Dec` */
    shortDay: `${day} ${MONTHS[month - 1]}`,
  };
}

export { DAY_MS, HOUR_MS };
