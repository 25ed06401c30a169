// Forward process: one image noised to the t of the slider, with alpha_bar and the SNR there.
import { getJSON, runUrl } from "./api.js";
import { imagePicker } from "./picker.js";
import { clearFrame, showFrame } from "./pixels.js";

const $ = (id) => document.getElementById(id);
let run, image = null, schedule = null, showImages;
let inFlight = false, again = false;

function format(x) {
  if (x === null) return "-inf";
  if (x === 0) return "0";
  return Math.abs(x) >= 1e4 || Math.abs(x) < 1e-3 ? x.toExponential(3) : x.toPrecision(4);
}

const CHART = { width: 380, height: 230, left: 46, right: 54, top: 24, bottom: 38 };
const BLUE = "#2f6fd6", ORANGE = "#d9822b", INK = "#1d2330", GRID = "#e3e7ee";

// alpha_bar (left axis, 0 to 1) and log-SNR (right axis) over t (bottom axis), with a line at t.
function drawChart(t) {
  const canvas = $("schedule-chart"), g = canvas.getContext("2d");
  const ratio = window.devicePixelRatio || 1;  // draw at the screen's resolution: crisp text
  canvas.width = CHART.width * ratio;
  canvas.height = CHART.height * ratio;
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, CHART.width, CHART.height);
  if (!schedule) return;
  const { left, right, top, bottom } = CHART;
  const x0 = left, x1 = CHART.width - right, y0 = CHART.height - bottom, y1 = top;
  const T = schedule.timesteps;
  const x = (i) => x0 + (i / Math.max(T - 1, 1)) * (x1 - x0);
  const finite = schedule.log_snr.filter((v) => v !== null);
  const lo = Math.min(...finite), hi = Math.max(...finite);
  const yAb = (v) => y0 - v * (y0 - y1);
  const ySnr = (v) => y0 - ((v === null ? lo : v) - lo) / Math.max(hi - lo, 1e-9) * (y0 - y1);
  g.font = "11px system-ui, sans-serif";
  g.lineWidth = 1;
  const label = (text, px, py, colour, align, baseline = "middle") => {
    g.fillStyle = colour; g.textAlign = align; g.textBaseline = baseline; g.fillText(text, px, py);
  };
  const line = (ax, ay, bx, by, colour) => {
    g.strokeStyle = colour; g.beginPath(); g.moveTo(ax, ay); g.lineTo(bx, by); g.stroke();
  };
  for (const v of [0, 0.5, 1]) {  // horizontal grid at the alpha_bar ticks
    line(x0, yAb(v), x1, yAb(v), GRID);
    label(String(v), x0 - 5, yAb(v), BLUE, "right");
  }
  for (const v of [lo, hi]) label(v.toFixed(1), x1 + 5, ySnr(v), ORANGE, "left");
  for (const [i, align] of [[0, "left"], [Math.round((T - 1) / 2), "center"], [T - 1, "right"]]) {
    line(x(i), y0, x(i), y0 + 4, INK);  // the end labels lean inwards, clear of the side axes' labels
    label(String(i), x(i), y0 + 6, INK, align, "top");
  }
  line(x0, y0, x1, y0, INK);
  line(x0, y0, x0, y1, BLUE);
  line(x1, y0, x1, y1, ORANGE);
  label("t", (x0 + x1) / 2, CHART.height - 4, INK, "center", "bottom");
  label("ᾱ", x0 - 3, 10, BLUE, "center");
  g.font = "9px system-ui, sans-serif";
  label("t", x0 + 2, 13, BLUE, "left");  // a subscript
  g.font = "11px system-ui, sans-serif";
  label("log-SNR", x1, 8, ORANGE, "center");
  const curve = (values, y, colour) => {
    g.strokeStyle = colour; g.lineWidth = 2; g.beginPath();
    values.forEach((v, i) => { const py = y(v); if (i === 0) g.moveTo(x(i), py); else g.lineTo(x(i), py); });
    g.stroke();
  };
  curve(schedule.alpha_bar, yAb, BLUE);
  curve(schedule.log_snr, ySnr, ORANGE);
  g.lineWidth = 1;
  g.setLineDash([3, 3]);
  line(x(t), y0, x(t), y1, INK);
  g.setLineDash([]);
  canvas.setAttribute("aria-label", `alpha-bar t (left axis, 0 to 1) and log-SNR (right axis, ${lo.toFixed(1)} to `
    + `${hi.toFixed(1)}) over t (bottom axis, 0 to ${T - 1}); the dashed line marks t = ${t}`);
}

async function update() {
  if (!image) return;
  if (inFlight) { again = true; return; }  // one request at a time; the latest slider value wins
  inFlight = true;
  try {
    do {
      again = false;
      const t = $("t").value, seed = $("noise-seed").value || "0";
      $("t-value").textContent = t;
      const query = new URLSearchParams({ image, t, seed });
      const view = await getJSON(`${runUrl(run.name, "forward")}?${query}`);
      showFrame($("fwd-x0"), view.x0);
      showFrame($("fwd-noise"), view.noise);
      showFrame($("fwd-xt"), view.x_t);
      $("stat-t").textContent = `${view.t} of 0..${view.timesteps - 1}`;
      $("stat-alpha-bar").textContent = format(view.alpha_bar);
      $("stat-signal").textContent = format(view.sqrt_alpha_bar);
      $("stat-noise").textContent = format(view.sqrt_one_minus_alpha_bar);
      $("stat-snr").textContent = format(view.snr);
      $("stat-log-snr").textContent = format(view.log_snr);
      drawChart(view.t);
      $("panel-forward").dataset.t = String(view.t);
      $("forward-error").textContent = "";
    } while (again);
  } catch (err) {
    $("forward-error").textContent = err.message;
  }
  inFlight = false;
}

export function setup() {
  $("t").addEventListener("input", update);
  $("noise-seed").addEventListener("change", update);
  showImages = imagePicker({ box: "train-images", more: "more-images", upload: "upload", error: "forward-error" },
                           (ref) => { image = ref; update(); });
}

export async function showRun(chosen) {
  run = chosen;
  image = null;
  schedule = null;
  for (const id of ["fwd-x0", "fwd-noise", "fwd-xt"]) clearFrame($(id));
  $("forward-error").textContent = "";
  $("t").max = run.timesteps - 1;
  $("t").value = Math.round((run.timesteps - 1) / 4);
  $("t-value").textContent = $("t").value;
  getJSON(runUrl(run.name, "schedule")).then((s) => { schedule = s; drawChart(Number($("t").value)); })
    .catch((err) => { $("forward-error").textContent = err.message; });
  await showImages(run);
}
