// Forward process: one image noised to the t of the slider, with alpha_bar and the SNR there.
import { getJSON, runUrl } from "./api.js";
import { imagePicker } from "./picker.js";

const $ = (id) => document.getElementById(id);
let run, image = null, schedule = null, showImages;
let inFlight = false, again = false;

function format(x) {
  if (x === null) return "-inf";
  if (x === 0) return "0";
  return Math.abs(x) >= 1e4 || Math.abs(x) < 1e-3 ? x.toExponential(3) : x.toPrecision(4);
}

function drawChart(t) {
  const canvas = $("schedule-chart"), g = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 6;
  g.clearRect(0, 0, w, h);
  if (!schedule) return;
  const T = schedule.timesteps;
  const x = (i) => pad + (i / Math.max(T - 1, 1)) * (w - 2 * pad);
  const finite = schedule.log_snr.filter((v) => v !== null);
  const lo = Math.min(...finite), hi = Math.max(...finite);
  const curve = (values, y, colour) => {
    g.strokeStyle = colour; g.lineWidth = 2; g.beginPath();
    values.forEach((v, i) => { const py = y(v); if (i === 0) g.moveTo(x(i), py); else g.lineTo(x(i), py); });
    g.stroke();
  };
  curve(schedule.alpha_bar, (v) => h - pad - v * (h - 2 * pad), "#2f6fd6");
  curve(schedule.log_snr, (v) => h - pad - ((v === null ? lo : v) - lo) / Math.max(hi - lo, 1e-9) * (h - 2 * pad), "#d9822b");
  g.strokeStyle = "#1d2330"; g.lineWidth = 1; g.beginPath(); g.moveTo(x(t), 0); g.lineTo(x(t), h); g.stroke();
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
      $("fwd-x0").src = view.x0;
      $("fwd-noise").src = view.noise;
      $("fwd-xt").src = view.x_t;
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
  $("forward-error").textContent = "";
  $("t").max = run.timesteps - 1;
  $("t").value = Math.round((run.timesteps - 1) / 4);
  $("t-value").textContent = $("t").value;
  getJSON(runUrl(run.name, "schedule")).then((s) => { schedule = s; drawChart(Number($("t").value)); })
    .catch((err) => { $("forward-error").textContent = err.message; });
  await showImages(run);
}
