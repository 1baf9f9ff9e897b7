// The timeline chart (SVG): a time axis, one row per participant (or per conversation on an
// agent's page), a bar per stint from its start to its end (open stints to now), entry and
// exit types, hand-overs drawn between rows, anomalies marked on the axis.
//
// Row labels are HTML beside the plot, so that they stay in place (and legible) while the
// plot scrolls sideways on a narrow screen. Every bar is a button: Tab reaches it, Enter or
// Space activates it, and its accessible name says who, when and how.

import { h, replace, s } from "./dom.mjs";
import { clock, dateTime, day, duration } from "./format.mjs";

const AXIS_HEIGHT = 34;
const ROW_HEIGHT = 46;
const BAR_TOP = 8;
const BAR_HEIGHT = 18;
const PAD_LEFT = 14;
const PAD_RIGHT = 22;
/** Below this the plot scrolls sideways rather than squeeze further. */
const MIN_PLOT_WIDTH = 200;
/** Roughly how wide a character of the 10–11 px labels is, to keep them inside the plot. */
const CHAR_WIDTH = 6.4;
const MIN_BAR_WIDTH = 4;
const TICK_SPACING = 96;
const STEPS_MS = [
  1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 15000, 30000, 60000, 120000, 300000, 600000, 900000,
  1800000, 3600000, 7200000, 10800000, 21600000, 43200000, 86400000, 172800000, 604800000, 2592000000,
];
export const HOP_KINDS = ["COLD", "WARM", "REDIAL", "ESCALATION"];

let chartCount = 0;

function ticks(start, end, plotWidth) {
  const span = end - start;
  const wanted = Math.max(2, Math.floor(plotWidth / TICK_SPACING));
  const step = STEPS_MS.find((candidate) => span / candidate <= wanted) ?? STEPS_MS.at(-1);
  const values = [];
  for (let value = Math.ceil(start / step) * step; value <= end; value += step) values.push(value);
  const label = step >= 86400000 ? (value) => day(value) : (value) => clock(value, step < 1000);
  return { values, label };
}

/** When the row's participant last left at or before `at`, if they were not there at `at`. */
function lastEndBefore(row, at) {
  let latest = null;
  for (const bar of row.bars) {
    if (bar.start <= at && (bar.end === null || bar.end > at)) return null; // present then
    if (bar.end !== null && bar.end <= at && (latest === null || bar.end > latest)) latest = bar.end;
  }
  return latest;
}

/** When the row's participant next entered at or after `at`, if they were not there at `at`. */
function nextStartAfter(row, at, now) {
  let earliest = null;
  for (const bar of row.bars) {
    if (bar.start <= at && (bar.end ?? now) >= at) return null; // present then
    if (bar.start >= at && (earliest === null || bar.start < earliest)) earliest = bar.start;
  }
  return earliest;
}

/** The label under a bar: entry and exit types. */
function typeLabel(bar) {
  const exit = bar.end === null ? "open" : (bar.exitType ?? "?");
  return { entry: bar.entryType ?? "?", exit };
}

/**
 * A chart in `container`; call `render(model)` as often as the data or the clock changes
 * (the focused bar keeps its focus, the plot its scroll position).
 *
 * model: {
 *   label: accessible name of the chart,
 *   rows: [{key, label, sublabel?, href?, testid?, bars: [{key, start, end|null, entryType,
 *           exitType, name (accessible), details?, data?: {…}}]}],
 *   hops?: [{key, at, from (row key|null), to (row key|null), kind, outcome, name}],
 *   anomalies?: [{key, at, name}],
 *   now: ms, onActivate?: (bar, row) => void, selectedKey?: bar key
 * }
 */
export function timeline(container, { legend = true, hops = true } = {}) {
  chartCount += 1;
  const id = `tl${chartCount}`;
  const labels = h("ol", { class: "timeline__labels", "aria-hidden": "false" });
  const plot = h("div", { class: "timeline__plot", role: "region", tabindex: "0" });
  const frame = h("div", { class: "timeline__frame" }, labels, plot);
  const legendNode = legend ? renderLegend(hops) : null;
  replace(container, frame, legendNode);
  container.classList.add("timeline");

  let model = null;
  let lastWidth = 0;
  const observer = new ResizeObserver(() => {
    if (model && plot.clientWidth !== lastWidth) draw();
  });
  observer.observe(plot);

  function draw() {
    const focusedKey = container.contains(document.activeElement)
      ? document.activeElement?.closest?.("[data-key]")?.dataset.key
      : null;
    lastWidth = plot.clientWidth;
    drawLabels();
    drawPlot();
    if (focusedKey) {
      const again = [...container.querySelectorAll("[data-key]")].find((node) => node.dataset.key === focusedKey);
      again?.focus({ preventScroll: true });
    }
  }

  function drawLabels() {
    const items = [h("li", { class: "timeline__axis-spacer", "aria-hidden": "true" })];
    for (const row of model.rows) {
      const title = row.sublabel ? `${row.label} (${row.sublabel})` : row.label;
      const main = row.href
        ? h(
            "a",
            { href: row.href, class: "timeline__label-main", title, dataset: { key: `label:${row.key}` } },
            row.label,
          )
        : h("span", { class: "timeline__label-main", title }, row.label);
      items.push(
        h(
          "li",
          { class: "timeline__label", testid: "timeline-row-label", dataset: { row: row.key } },
          main,
          row.sublabel ? h("span", { class: "timeline__label-sub", title }, row.sublabel) : null,
        ),
      );
    }
    replace(labels, ...items);
    labels.style.setProperty("--row-height", `${ROW_HEIGHT}px`);
    labels.style.setProperty("--axis-height", `${AXIS_HEIGHT}px`);
  }

  function drawPlot() {
    const { rows, now } = model;
    if (!rows.length) {
      plot.removeAttribute("aria-label");
      replace(plot, h("p", { class: "muted timeline__empty" }, model.emptyText ?? "Nothing to show yet."));
      return;
    }
    const hopList = hops ? (model.hops ?? []) : [];
    const anomalies = model.anomalies ?? [];
    const width = Math.max(MIN_PLOT_WIDTH, plot.clientWidth || MIN_PLOT_WIDTH);
    const height = AXIS_HEIGHT + rows.length * ROW_HEIGHT + 8;
    const plotWidth = width - PAD_LEFT - PAD_RIGHT;

    // The time domain: every bar, hop and anomaly, and now while anything is open.
    let start = Infinity;
    let end = -Infinity;
    let open = false;
    for (const row of rows) {
      for (const bar of row.bars) {
        start = Math.min(start, bar.start);
        end = Math.max(end, bar.end ?? now);
        if (bar.end === null) open = true;
      }
    }
    for (const mark of [...hopList, ...anomalies]) {
      start = Math.min(start, mark.at);
      end = Math.max(end, mark.at);
    }
    if (!Number.isFinite(start)) {
      start = now - 60000;
      end = now;
    }
    const span = Math.max(end - start, 1000);
    const padding = span * 0.03;
    const domainStart = start - padding;
    const domainEnd = start + span + padding;
    const x = (time) => PAD_LEFT + ((time - domainStart) / (domainEnd - domainStart)) * plotWidth;
    const rowIndex = new Map(rows.map((row, index) => [row.key, index]));
    // Text drawn so far, so that labels never print over each other.
    const placed = [];
    function label(parent, className, textX, textY, anchor, text) {
      const textWidth = text.length * CHAR_WIDTH;
      const left = anchor === "start" ? textX : anchor === "end" ? textX - textWidth : textX - textWidth / 2;
      const box = { left, right: left + textWidth, top: textY - 10, bottom: textY + 2 };
      if (box.left < 0 || box.right > width) return false;
      if (
        placed.some(
          (other) =>
            box.left < other.right && other.left < box.right && box.top < other.bottom && other.top < box.bottom,
        )
      ) {
        return false;
      }
      placed.push(box);
      parent.append(s("text", { class: className, x: textX, y: textY, "text-anchor": anchor }, text));
      return true;
    }
    const rowTop = (index) => AXIS_HEIGHT + index * ROW_HEIGHT;
    const barMiddle = (index) => rowTop(index) + BAR_TOP + BAR_HEIGHT / 2;

    const svg = s("svg", {
      class: "timeline__svg",
      width,
      height,
      viewBox: `0 0 ${width} ${height}`,
      role: "group",
      "aria-label": model.label,
      testid: "timeline-svg",
    });
    svg.append(defs());

    // Row bands and the axis with its grid.
    const grid = s("g", { class: "timeline__grid", "aria-hidden": "true" });
    for (let index = 0; index < rows.length; index += 1) {
      grid.append(
        s("rect", {
          class: `timeline__band timeline__band--${index % 2}`,
          x: 0,
          y: rowTop(index),
          width,
          height: ROW_HEIGHT,
        }),
      );
    }
    const { values, label: tickLabel } = ticks(domainStart, domainEnd, plotWidth);
    for (const value of values) {
      const tickX = x(value);
      const text = tickLabel(value);
      const half = (text.length * CHAR_WIDTH) / 2;
      grid.append(s("line", { class: "timeline__tick", x1: tickX, x2: tickX, y1: AXIS_HEIGHT - 6, y2: height }));
      // A label that would not fit centred on its tick is left out (the tick stays).
      if (tickX - half >= 2 && tickX + half <= width - 2) {
        grid.append(s("text", { class: "timeline__tick-label", x: tickX, y: 14, "text-anchor": "middle" }, text));
      }
    }
    grid.append(s("line", { class: "timeline__axis", x1: 0, x2: width, y1: AXIS_HEIGHT - 0.5, y2: AXIS_HEIGHT - 0.5 }));
    svg.append(grid);

    if (open) {
      const nowX = x(now);
      svg.append(
        s(
          "g",
          { class: "timeline__now", "aria-hidden": "true" },
          s("line", { x1: nowX, x2: nowX, y1: AXIS_HEIGHT - 10, y2: height }),
          s("text", { x: nowX - 3, y: 27, "text-anchor": "end" }, "now"),
        ),
      );
    }

    // Anomalies: a marker on the axis and a faint line down through the rows.
    const anomalyLayer = s("g", { class: "timeline__anomalies" });
    for (const anomaly of anomalies) {
      const markX = x(anomaly.at);
      anomalyLayer.append(
        s(
          "g",
          {
            class: "anomaly",
            role: "img",
            "aria-label": anomaly.name,
            testid: "anomaly-marker",
            dataset: { key: anomaly.key },
          },
          s("title", {}, anomaly.name),
          s("line", { class: "anomaly__line", x1: markX, x2: markX, y1: AXIS_HEIGHT, y2: height }),
          s("path", { class: "anomaly__mark", d: `M${markX - 6},${AXIS_HEIGHT - 13} h12 l-6,11 z` }),
          s("text", { class: "anomaly__bang", x: markX, y: AXIS_HEIGHT - 5, "text-anchor": "middle" }, "!"),
        ),
      );
    }
    svg.append(anomalyLayer);

    // Bars.
    const barLayer = s("g", { class: "timeline__bars" });
    rows.forEach((row, index) => {
      for (const bar of row.bars) {
        const x0 = x(bar.start);
        const x1 = Math.max(x(bar.end ?? now), x0 + MIN_BAR_WIDTH);
        const top = rowTop(index) + BAR_TOP;
        const types = typeLabel(bar);
        const classes = [
          "bar",
          bar.end === null ? "bar--open" : "bar--closed",
          bar.key === model.selectedKey && "bar--selected",
        ];
        const group = s(
          "g",
          {
            class: classes,
            tabindex: "0",
            role: "button",
            "aria-label": bar.name,
            "aria-pressed": model.onActivate ? String(bar.key === model.selectedKey) : null,
            testid: "stint-bar",
            dataset: { key: bar.key, row: row.key, rowIndex: index, open: bar.end === null, ...(bar.data ?? {}) },
            on: {
              click: () => model.onActivate?.(bar, row),
              keydown: (event) => {
                if (event.key === "Enter" || event.key === " ") {
                  event.preventDefault();
                  model.onActivate?.(bar, row);
                }
              },
            },
          },
          s("title", {}, bar.name),
          s("rect", { class: "bar__rect", x: x0, y: top, width: x1 - x0, height: BAR_HEIGHT, rx: 3 }),
          bar.end === null
            ? s("path", {
                class: "bar__open-end",
                d: `M${x1},${top - 2} l7,${BAR_HEIGHT / 2 + 2} l-7,${BAR_HEIGHT / 2 + 2} z`,
              })
            : null,
        );
        // Entry and exit types under the bar's ends; one combined label when it is short;
        // none where it would run into a label already drawn (the bar's name says it all).
        const labelY = top + BAR_HEIGHT + 13;
        if (x1 - x0 >= (types.entry.length + types.exit.length + 2) * CHAR_WIDTH) {
          label(group, "bar__type", x0, labelY, "start", types.entry);
          label(group, "bar__type", x1, labelY, "end", types.exit);
        } else {
          const text = `${types.entry} → ${types.exit}`;
          const anchorEnd = x0 + text.length * CHAR_WIDTH > width - 2;
          label(
            group,
            "bar__type",
            anchorEnd ? Math.min(x1, width - 2) : x0,
            labelY,
            anchorEnd ? "end" : "start",
            text,
          );
        }
        barLayer.append(group);
      }
    });
    svg.append(barLayer);

    // Hand-overs: an arrow at the hop's time from the giver's row to the taker's.
    const hopLayer = s("g", { class: "timeline__hops" });
    for (const hop of hopList) {
      const hopX = x(hop.at);
      const fromIndex = hop.from === null ? undefined : rowIndex.get(hop.from);
      const toIndex = hop.to === null ? undefined : rowIndex.get(hop.to);
      // The path: from the giver's row to the taker's at the hop's time; when the giver had
      // already left (a cold transfer) it starts at the end of their bar, and when the taker
      // enters later (an escalation's agent) it ends at the start of theirs.
      const points = [];
      if (fromIndex !== undefined && toIndex !== undefined) {
        const down = toIndex > fromIndex;
        const y1 = barMiddle(fromIndex);
        const y2 = barMiddle(toIndex) + (down ? -1 : 1) * (BAR_HEIGHT / 2 + 1);
        const left = lastEndBefore(rows[fromIndex], hop.at);
        if (left !== null && x(left) < hopX - 3) points.push([x(left), y1]);
        points.push([hopX, y1 + (points.length ? 0 : (down ? 1 : -1) * (BAR_HEIGHT / 2))]);
        const joined = nextStartAfter(rows[toIndex], hop.at, now);
        if (joined !== null && x(joined) > hopX + 3) {
          points.push([hopX, barMiddle(toIndex)]);
          points.push([x(joined) - 1, barMiddle(toIndex)]);
        } else {
          points.push([hopX, y2]);
        }
      } else if (toIndex !== undefined) {
        // From nobody known: a short arrow from above the taker's bar.
        const y2 = rowTop(toIndex) + BAR_TOP - 1;
        points.push([hopX, y2 - 20], [hopX, y2]);
      } else if (fromIndex !== undefined) {
        // To nobody yet (a pending or failed escalation): a short stroke down from the giver.
        const y1 = barMiddle(fromIndex) + BAR_HEIGHT / 2;
        points.push([hopX, y1], [hopX, y1 + 18]);
      } else {
        points.push([hopX, AXIS_HEIGHT], [hopX, AXIS_HEIGHT + 16]);
      }
      const [startX, startY] = points[0];
      const [endX, endY] = points.at(-1);
      const kind = HOP_KINDS.includes(hop.kind) ? hop.kind : "COLD";
      const marker = hop.outcome === "completed" && toIndex !== undefined ? `url(#${id}-arrow-${kind})` : null;
      const group = s(
        "g",
        {
          class: ["hop", `hop--${kind.toLowerCase()}`, `hop--${hop.outcome}`],
          role: "img",
          "aria-label": hop.name,
          testid: "hop",
          dataset: { key: hop.key, kind: hop.kind, outcome: hop.outcome, from: hop.from ?? "", to: hop.to ?? "" },
        },
        s("title", {}, hop.name),
        s("path", {
          class: "hop__line",
          d: points.map(([px, py], index) => `${index ? "L" : "M"}${px},${py}`).join(" "),
          "marker-end": marker,
        }),
      );
      if (fromIndex === undefined) group.append(s("circle", { class: "hop__origin", cx: startX, cy: startY, r: 3 }));
      if (hop.outcome === "pending") group.append(s("circle", { class: "hop__pending", cx: endX, cy: endY, r: 4.5 }));
      if (hop.outcome === "failed") {
        group.append(
          s("path", { class: "hop__failed", d: `M${endX - 5},${endY - 5} l10,10 M${endX + 5},${endY - 5} l-10,10` }),
        );
      }
      // The kind beside the vertical stroke, halfway between the rows.
      const verticalTop = Math.min(...points.filter(([px]) => px === hopX).map(([, py]) => py));
      const verticalBottom = Math.max(...points.filter(([px]) => px === hopX).map(([, py]) => py));
      const labelText = hop.outcome === "completed" ? hop.kind : `${hop.kind} ${hop.outcome}`;
      const labelY = (verticalTop + verticalBottom) / 2 + 4;
      if (!label(group, "hop__label", hopX + 5, labelY, "start", labelText))
        label(group, "hop__label", hopX - 5, labelY, "end", labelText);
      hopLayer.append(group);
    }
    svg.append(hopLayer);

    plot.setAttribute(
      "aria-label",
      `${model.label}: time runs left to right, from ${dateTime(domainStart)} to ${dateTime(domainEnd)} UTC`,
    );
    replace(plot, svg);
  }

  function defs() {
    const markers = HOP_KINDS.map((kind) =>
      s(
        "marker",
        {
          id: `${id}-arrow-${kind}`,
          class: `hop-marker hop-marker--${kind.toLowerCase()}`,
          viewBox: "0 0 10 10",
          refX: 9,
          refY: 5,
          markerWidth: 7,
          markerHeight: 7,
          orient: "auto-start-reverse",
        },
        s("path", { d: "M0,0 L10,5 L0,10 z" }),
      ),
    );
    return s("defs", {}, ...markers);
  }

  return {
    render(next) {
      model = next;
      draw();
    },
    destroy() {
      observer.disconnect();
    },
  };
}

/** A small SVG swatch for the legend. */
function swatch(...children) {
  return s(
    "svg",
    { class: "legend__swatch", width: 34, height: 18, viewBox: "0 0 34 18", "aria-hidden": "true" },
    ...children,
  );
}

function renderLegend(withHops) {
  const items = [
    [
      "Stint (closed)",
      swatch(s("rect", { class: "bar__rect bar--closed-swatch", x: 2, y: 4, width: 30, height: 10, rx: 2 })),
    ],
    [
      "Stint still open (grows to now)",
      swatch(
        s("rect", { class: "bar__rect bar--open-swatch", x: 2, y: 4, width: 24, height: 10, rx: 2 }),
        s("path", { class: "bar__open-end bar--open-swatch", d: "M26,2 l6,7 l-6,7 z" }),
      ),
    ],
  ];
  if (withHops) {
    for (const kind of HOP_KINDS) {
      items.push([
        `${kind} hand-over`,
        swatch(s("line", { class: `hop__line hop--${kind.toLowerCase()}`, x1: 2, x2: 32, y1: 9, y2: 9 })),
      ]);
    }
    items.push([
      "Failed hand-over",
      swatch(
        s("line", { class: "hop__line hop--escalation hop--failed", x1: 2, x2: 24, y1: 9, y2: 9 }),
        s("path", { class: "hop__failed", d: "M23,4 l9,10 M32,4 l-9,10" }),
      ),
    ]);
    items.push([
      "Pending hand-over",
      swatch(
        s("line", { class: "hop__line hop--escalation hop--pending", x1: 2, x2: 24, y1: 9, y2: 9 }),
        s("circle", { class: "hop__pending", cx: 28, cy: 9, r: 4 }),
      ),
    ]);
  }
  items.push(["Anomaly", swatch(s("path", { class: "anomaly__mark", d: "M11,3 h12 l-6,12 z" }))]);
  return h(
    "div",
    { class: "legend" },
    h("h3", { class: "legend__title" }, "Legend"),
    h(
      "ul",
      { class: "legend__list" },
      items.map(([text, icon]) => h("li", { class: "legend__item" }, icon, text)),
    ),
  );
}

/** "agentId1, NA entry 10:00:01 to COLD exit 10:03:12 (3 min 11 s)". */
export function stintName(who, stint, now) {
  const joined = Date.parse(stint.joinedAt);
  const left = stint.leftAt ? Date.parse(stint.leftAt) : null;
  const seconds = ((left ?? now) - joined) / 1000;
  const end = left === null ? "still present" : `${stint.exitType ?? "unknown"} exit ${clock(left)}`;
  return `${who}, ${stint.entryType} entry ${clock(joined)} to ${end} (${duration(seconds)})`;
}
