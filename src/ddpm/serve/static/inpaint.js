// Inpaint: pick an image, paint the region to redraw, and watch RePaint fill it (ddpm inpaint).
import { runUrl, send, streamJob } from "./api.js";
import { promptLimit } from "./generate.js";
import { imagePicker } from "./picker.js";
import { clearPictures as clearPanelPictures, frameScaleOf, pixelImage, resultScale, showFrame } from "./pixels.js";

const $ = (id) => document.getElementById(id);
const SCALE_TO = 256;  // the canvas is shown about this wide, the image's pixels magnified
let run, image = null, picture = null, mask = null, width = 0, height = 0;
let showImages, painting = false, jobId = null, aborter = null;

// ---- the mask: one byte per image pixel, 1 = generate ----------------------------------------

function redraw() {
  const canvas = $("mask-canvas"), g = canvas.getContext("2d");
  g.imageSmoothingEnabled = false;
  g.clearRect(0, 0, canvas.width, canvas.height);
  if (picture) g.drawImage(picture, 0, 0, canvas.width, canvas.height);
  const s = canvas.width / width;
  g.fillStyle = "rgba(217, 60, 60, 0.6)";
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) if (mask[y * width + x]) g.fillRect(x * s, y * s, s, s);
  }
  const painted = mask.reduce((a, b) => a + b, 0);
  $("mask-info").textContent = `${painted} of ${width * height} pixels to generate`;
  $("inpaint").disabled = !image || painted === 0 || painted === width * height || Boolean(aborter);
  $("panel-inpaint").dataset.painted = String(painted);
}

function paintAt(event) {
  const canvas = $("mask-canvas"), box = canvas.getBoundingClientRect();
  const cx = ((event.clientX - box.left) / box.width) * width, cy = ((event.clientY - box.top) / box.height) * height;
  const r = Number($("brush").value) / 2;
  for (let y = Math.floor(cy - r); y <= Math.ceil(cy + r); y++) {
    for (let x = Math.floor(cx - r); x <= Math.ceil(cx + r); x++) {
      if (x < 0 || y < 0 || x >= width || y >= height) continue;
      if ((x + 0.5 - cx) ** 2 + (y + 0.5 - cy) ** 2 <= Math.max(r * r, 0.5)) mask[y * width + x] = $("erase").checked ? 0 : 1;
    }
  }
  redraw();
}

function bottomHalf() {  // added to what is painted, like a brush stroke
  mask.fill(1, Math.floor(height / 2) * width);
  redraw();
}

function maskPng() {
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const g = canvas.getContext("2d"), pixels = g.createImageData(width, height);
  for (let i = 0; i < width * height; i++) {
    const v = mask[i] ? 255 : 0;
    pixels.data.set([v, v, v, 255], i * 4);
  }
  g.putImageData(pixels, 0, 0);
  return canvas.toDataURL("image/png");
}

// ---- the image ---------------------------------------------------------------------------------

function choose(ref, img) {
  image = ref;
  picture = new Image();
  picture.onload = redraw;
  picture.src = img.src;
  $("panel-inpaint").dataset.image = ref;
}

// ---- the job -------------------------------------------------------------------------------------

function setState(state, text) {
  $("panel-inpaint").dataset.state = state;
  if (text !== undefined) $("inpaint-progress-text").textContent = text;
  const busy = state === "queued" || state === "running";
  $("inpaint-cancel").disabled = !busy;
  redraw();
  $("inpaint").disabled = $("inpaint").disabled || busy;
}

function request() {
  const body = {
    image, mask: maskPng(),
    steps: Number($("inpaint-steps").value),
    jump_length: Number($("jump-length").value),
    jump_n_sample: Number($("jump-n-sample").value),
    seed: Number($("inpaint-seed").value),
    n: Number($("inpaint-n").value),
  };
  if (run.conditioning === "class" && $("inpaint-class").value !== "none") body.class = Number($("inpaint-class").value);
  if (run.conditioning === "text" && $("inpaint-prompt").value.trim()) body.prompt = $("inpaint-prompt").value;
  // guidance needs a condition to guide towards: without a class or prompt the fill is unconditional
  if (body.class !== undefined || body.prompt !== undefined) body.guidance_scale = Number($("inpaint-guidance").value);
  return body;
}

function clearPictures() {
  clearPanelPictures($("inpaint-results"), $("inpaint-results-images"), [$("inpaint-xt"), $("inpaint-x0")]);
}

async function showResults(done) {
  const box = $("inpaint-results-images");
  box.replaceChildren();
  const scale = resultScale(Math.max(width, height), await frameScaleOf(done.grid));
  done.images.forEach((url, i) => {
    const link = document.createElement("a");
    link.href = url;
    link.download = `${run.name}-inpaint-seed${done.seed}-${String(i).padStart(5, "0")}.png`;
    link.title = `completion ${i}: click to save`;
    link.append(pixelImage(url, width, height, scale, `completion ${i}`));
    box.append(link);
  });
  $("inpaint-grid").href = done.grid;
  $("inpaint-grid").download = `${run.name}-inpaint-seed${done.seed}-grid.png`;
  showFrame($("inpaint-xt"), done.grid);
  showFrame($("inpaint-x0"), done.grid);
  $("inpaint-results").hidden = false;
}

async function start(event) {
  event.preventDefault();
  $("inpaint-error").textContent = "";
  clearPictures();
  $("inpaint-progress").value = 0;
  const body = request();
  aborter = new AbortController();
  setState("queued", "sending...");
  try {
    await streamJob(runUrl(run.name, "inpaint"), body, {
      queued: (d) => { jobId = d.job; setState("queued", d.ahead ? `waiting: ${d.ahead} ahead` : "loading the model..."); },
      start: (d) => { $("inpaint-progress").max = d.total; setState("running", `0 / ${d.total} model evaluations on ${d.device}`); },
      step: (d) => {
        $("inpaint-progress").value = d.done;
        $("inpaint-progress-text").textContent = `${d.done} / ${d.total} model evaluations`;
        showFrame($("inpaint-xt"), d.x_t);
        showFrame($("inpaint-x0"), d.x0);
      },
      done: async (d) => {
        await showResults(d);
        aborter = null;
        setState("done", `${body.n} completions in ${d.seconds.toFixed(1)} s (seed ${d.seed})`);
      },
      cancelled: () => { aborter = null; setState("cancelled", "cancelled"); },
      error: (d) => { $("inpaint-error").textContent = d.message; aborter = null; setState("error", ""); },
    }, aborter.signal);
  } catch (err) {
    aborter = null;
    if (err.name === "AbortError") setState("cancelled", "cancelled");
    else { $("inpaint-error").textContent = err.message; setState("error", ""); }
  }
  aborter = null;
  const state = $("panel-inpaint").dataset.state;
  if (state === "running" || state === "queued") setState("error", "the connection ended early");
  jobId = null;
}

async function cancel() {
  if (jobId) {
    try { await send(`/api/jobs/${jobId}`, "DELETE"); return; } catch (_) { /* finished meanwhile */ }
  }
  if (aborter) aborter.abort();
}

export function setup(context) {
  $("inpaint-n").max = context.info.limits.max_images;
  $("inpaint-n").value = Math.min(8, context.info.limits.max_images);
  const canvas = $("mask-canvas");
  canvas.addEventListener("pointerdown", (e) => { painting = true; canvas.setPointerCapture(e.pointerId); paintAt(e); });
  canvas.addEventListener("pointermove", (e) => { if (painting) paintAt(e); });
  canvas.addEventListener("pointerup", () => { painting = false; });
  canvas.addEventListener("pointercancel", () => { painting = false; });
  $("mask-clear").addEventListener("click", () => { mask.fill(0); redraw(); });
  $("mask-bottom").addEventListener("click", bottomHalf);
  showImages = imagePicker({ box: "inpaint-images", more: "inpaint-more", upload: "inpaint-upload", error: "inpaint-error" },
                           choose);
  $("inpaint-form").addEventListener("submit", start);
  $("inpaint-cancel").addEventListener("click", cancel);
}

export async function showRun(chosen) {
  run = chosen;
  [height, width] = run.image_size;
  mask = new Uint8Array(width * height);
  image = null;
  picture = null;
  const scale = Math.max(1, Math.floor(SCALE_TO / Math.max(width, height)));
  $("mask-canvas").width = width * scale;
  $("mask-canvas").height = height * scale;
  $("mask-canvas").style.width = `${width * scale}px`;
  $("mask-canvas").style.height = `${height * scale}px`;
  $("brush").max = Math.max(2, Math.round(Math.max(width, height) / 2));
  $("brush").value = Math.max(1, Math.round(Math.max(width, height) / 8));
  $("inpaint-steps").max = run.timesteps;
  $("inpaint-steps").value = Math.min(50, run.timesteps);
  $("inpaint-error").textContent = "";
  clearPictures();
  const classes = run.conditioning === "class";
  $("inpaint-row-class").hidden = !classes;
  $("inpaint-row-guidance").hidden = run.conditioning === "none";
  $("inpaint-row-prompt").hidden = run.conditioning !== "text";
  $("inpaint-prompt-limit").textContent = promptLimit(run);
  $("inpaint-guidance").value = run.sample.guidance_scale;
  const select = $("inpaint-class");
  select.replaceChildren(new Option("none (unconditional)", "none"));
  for (let c = 0; classes && c < run.num_classes; c++) select.add(new Option(String(c), String(c)));
  setState("idle", "");
  await showImages(run);
}
