// Forward process: one image noised to the t of the slider, with alpha_bar and the SNR there.
import { getJSON, runUrl, send } from "./api.js";

const $ = (id) => document.getElementById(id);
let run, image = null, nextStart = 0, schedule = null;
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

function choose(ref, img) {
  image = ref;
  for (const other of document.querySelectorAll("#train-images img")) other.classList.toggle("chosen", other === img);
  update();
}

function addThumb(item) {
  const img = document.createElement("img");
  img.src = item.png;
  img.alt = item.image;
  img.title = item.label === null ? item.image : `${item.image}, class ${item.label}`;
  img.dataset.image = item.image;
  img.addEventListener("click", () => choose(item.image, img));
  $("train-images").append(img);
  return img;
}

async function more() {
  try {
    const page = await getJSON(`${runUrl(run.name, "train-images")}?start=${nextStart}&count=24`);
    const imgs = page.images.map(addThumb);
    nextStart = page.start + page.images.length;
    $("more-images").disabled = nextStart >= page.total;
    if (!image && imgs.length) choose(page.images[0].image, imgs[0]);
  } catch (err) {
    $("forward-error").textContent = err.message;  // e.g. the data set is not on this machine: upload instead
    $("more-images").disabled = true;
  }
}

async function upload() {
  const file = $("upload").files[0];
  if (!file) return;
  try {
    const done = await send(runUrl(run.name, "images"), "POST", file, file.type || "application/octet-stream");
    const img = addThumb({ image: done.image, png: done.png, label: null });
    choose(done.image, img);
  } catch (err) {
    $("forward-error").textContent = err.message;
  }
  $("upload").value = "";
}

export function setup() {
  $("t").addEventListener("input", update);
  $("noise-seed").addEventListener("change", update);
  $("more-images").addEventListener("click", more);
  $("upload").addEventListener("change", upload);
}

export async function showRun(chosen) {
  run = chosen;
  image = null;
  nextStart = 0;
  schedule = null;
  $("train-images").replaceChildren();
  $("forward-error").textContent = "";
  $("t").max = run.timesteps - 1;
  $("t").value = Math.round((run.timesteps - 1) / 4);
  $("t-value").textContent = $("t").value;
  getJSON(runUrl(run.name, "schedule")).then((s) => { schedule = s; drawChart(Number($("t").value)); })
    .catch((err) => { $("forward-error").textContent = err.message; });
  await more();
}
