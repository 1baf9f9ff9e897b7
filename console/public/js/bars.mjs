// A grouped bar chart (SVG): one group of bars per time bucket, one bar per series. Drawn
// at the width of its container (the viewBox is the container's size, so text stays
// legible at any width; the SVG scales with it between redraws). One image for assistive
// technology: `role="img"` with a summary as its name; the numbers are in a table beside it.

import { h, replace, s } from "./dom.mjs";

const HEIGHT = 250;
const PAD_LEFT = 40;
const PAD_RIGHT = 10;
const PAD_TOP = 12;
const PAD_BOTTOM = 40;
const MIN_WIDTH = 280;
/** Roughly how wide a character of the 11 px labels is. */
const CHAR_WIDTH = 6.4;
const STEPS = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 2500, 5000, 10000, 20000, 50000, 100000];

/** A step for about four grid lines up to `max`. */
function niceStep(max) {
  return STEPS.find((step) => max / step <= 4) ?? 10 ** Math.ceil(Math.log10(max / 4));
}

/**
 * A chart in `container`; call `render(model)` when the data change.
 *
 * series: [{key, label, className}]
 * model: {
 *   label: the image's accessible name (a summary of what it shows),
 *   groups: [{key, main (label under the group), sub? (second line, e.g. the day), title
 *             (tooltip), values: {seriesKey: number}, data?: {…}}],
 *   emptyText?
 * }
 */
export function barChart(container, { series, testid = "bar-chart" }) {
  const frame = h("div", { class: "bars__frame", testid });
  const legend = h(
    "ul",
    { class: "bars__legend", "aria-label": "Legend" },
    series.map((item) =>
      h(
        "li",
        { class: "bars__legend-item" },
        s(
          "svg",
          { class: "bars__swatch", width: 14, height: 14, viewBox: "0 0 14 14", "aria-hidden": "true" },
          s("rect", { class: ["bars__bar", item.className], x: 1, y: 1, width: 12, height: 12, rx: 2 }),
        ),
        item.label,
      ),
    ),
  );
  replace(container, frame, legend);

  let model = null;
  let lastWidth = 0;
  const observer = new ResizeObserver(() => {
    if (model && frame.clientWidth !== lastWidth) draw();
  });
  observer.observe(frame);

  function draw() {
    lastWidth = frame.clientWidth;
    const { groups } = model;
    if (!groups.length) {
      replace(frame, h("p", { class: "muted bars__empty" }, model.emptyText ?? "Nothing to show."));
      return;
    }
    const width = Math.max(MIN_WIDTH, Math.floor(frame.clientWidth || MIN_WIDTH));
    const plotWidth = width - PAD_LEFT - PAD_RIGHT;
    const plotHeight = HEIGHT - PAD_TOP - PAD_BOTTOM;
    const baseline = PAD_TOP + plotHeight;
    let max = 0;
    for (const group of groups) for (const item of series) max = Math.max(max, group.values[item.key] ?? 0);
    const step = niceStep(Math.max(max, 1));
    const top = Math.max(step, Math.ceil(max / step) * step);
    const y = (value) => baseline - (value / top) * plotHeight;

    const svg = s("svg", {
      class: "bars__svg",
      viewBox: `0 0 ${width} ${HEIGHT}`,
      width,
      height: HEIGHT,
      preserveAspectRatio: "xMinYMin meet",
      role: "img",
      "aria-label": model.label,
      testid: "bar-chart-svg",
    });

    // The value axis: grid lines and their numbers.
    const grid = s("g", { class: "bars__grid", "aria-hidden": "true" });
    for (let value = 0; value <= top; value += step) {
      const lineY = Math.round(y(value)) + 0.5;
      grid.append(
        s("line", {
          class: value === 0 ? "bars__axis" : "bars__gridline",
          x1: PAD_LEFT,
          x2: width - PAD_RIGHT,
          y1: lineY,
          y2: lineY,
        }),
        s("text", { class: "bars__tick", x: PAD_LEFT - 6, y: lineY + 4, "text-anchor": "end" }, String(value)),
      );
    }
    svg.append(grid);

    // The groups: a bar per series, side by side, and the bucket's label under them.
    const groupWidth = plotWidth / groups.length;
    const inner = groupWidth * (groups.length > 1 ? 0.8 : 0.5);
    const barWidth = Math.max(1, inner / series.length);
    const longest = Math.max(...groups.map((group) => group.main.length));
    const every = Math.max(1, Math.ceil((longest * CHAR_WIDTH + 8) / groupWidth));
    let lastSubRight = -Infinity;
    const layer = s("g", { class: "bars__groups" });
    groups.forEach((group, index) => {
      const left = PAD_LEFT + index * groupWidth;
      const middle = left + groupWidth / 2;
      const node = s(
        "g",
        { class: "bars__group", testid: "chart-group", dataset: { key: group.key, ...(group.data ?? {}) } },
        s("title", {}, group.title),
        s("rect", { class: "bars__hit", x: left, y: PAD_TOP, width: groupWidth, height: plotHeight }),
      );
      series.forEach((item, position) => {
        const value = group.values[item.key] ?? 0;
        if (!(value > 0)) return;
        const barX = middle - inner / 2 + position * (inner / series.length);
        node.append(
          s("rect", {
            class: ["bars__bar", item.className],
            x: barX,
            y: y(value),
            width: barWidth,
            height: baseline - y(value),
            testid: "chart-bar",
            dataset: { series: item.key, value },
          }),
        );
      });
      if (index % every === 0) {
        node.append(
          s("text", { class: "bars__label", x: middle, y: baseline + 15, "text-anchor": "middle" }, group.main),
        );
      }
      // The second line (a new day) where it changes, unless it would run into the last one.
      if (group.sub) {
        const subWidth = group.sub.length * CHAR_WIDTH;
        const subLeft = Math.max(0, Math.min(middle - subWidth / 2, width - subWidth));
        if (subLeft > lastSubRight + 6) {
          node.append(
            s("text", { class: "bars__sublabel", x: subLeft, y: baseline + 31, "text-anchor": "start" }, group.sub),
          );
          lastSubRight = subLeft + subWidth;
        }
      }
      layer.append(node);
    });
    svg.append(layer);
    replace(frame, svg);
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
