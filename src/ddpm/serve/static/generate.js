// Generate: sampler settings in, a live stream of x_t and predicted x_0 frames, the images out.
import { runUrl, send, streamJob } from "./api.js";
import { clearPictures as clearPanelPictures, frameScaleOf, pixelImage, resultScale, showFrame } from "./pixels.js";

const $ = (id) => document.getElementById(id);
let info, run, jobId = null, aborter = null;

function defaultSteps(sampler) {
  if (sampler === run.sample.sampler && run.sample.steps) return run.sample.steps;
  const known = info.samplers.find((s) => s.name === sampler);
  return Math.min(known && known.default_steps ? known.default_steps : run.timesteps, run.timesteps);
}

function setState(state, text) {
  $("panel-generate").dataset.state = state;
  if (text !== undefined) $("progress-text").textContent = text;
  const busy = state === "queued" || state === "running";
  $("generate").disabled = busy;
  $("cancel").disabled = !busy;
}

function samplerChanged() {
  const sampler = $("sampler").value;
  $("steps").value = defaultSteps(sampler);
  $("row-eta").hidden = sampler !== "ddim";
}

function request() {
  const body = {
    sampler: $("sampler").value,
    steps: Number($("steps").value),
    seed: Number($("seed").value),
    n: Number($("n").value),
    eta: $("sampler").value === "ddim" ? Number($("eta").value) : 0,
  };
  if (run.conditioning !== "none") body.guidance_scale = Number($("guidance").value);
  if (run.conditioning === "class" && $("class").value !== "all") body.class = Number($("class").value);
  if (run.conditioning === "text" && $("prompt").value.trim()) body.prompt = $("prompt").value;
  return body;
}

// What the prompt box says: the limit the server checks, in the run's text encoder's tokens.
export function promptLimit(run) {
  if (!run.text) return "";
  const n = run.text.max_tokens;
  return run.text.encoder === "builtin" ? `(at most ${n} tokens, one per word)`
    : `(at most ${n} WordPiece tokens, [CLS] and [SEP] included)`;
}

function clearPictures() {
  clearPanelPictures($("results"), $("result-images"), [$("frame-xt"), $("frame-x0")]);
}

async function showResults(done) {
  const box = $("result-images");
  box.replaceChildren();
  const [h, w] = run.image_size;
  const scale = resultScale(Math.max(h, w), await frameScaleOf(done.grid));
  done.images.forEach((url, i) => {
    const link = document.createElement("a");
    const label = done.labels ? `_class${done.labels[i]}` : "";
    link.href = url;
    link.download = `${run.name}-seed${done.seed}-${String(i).padStart(5, "0")}${label}.png`;
    link.title = `image ${i}${done.labels ? `, class ${done.labels[i]}` : ""}: click to save`;
    link.append(pixelImage(url, w, h, scale, `image ${i}`));
    box.append(link);
  });
  $("download-grid").href = done.grid;
  $("download-grid").download = `${run.name}-seed${done.seed}-grid.png`;
  showFrame($("frame-xt"), done.grid);  // the last x_t is the sample itself
  showFrame($("frame-x0"), done.grid);
  $("results").hidden = false;
}

async function start(event) {
  event.preventDefault();
  $("generate-error").textContent = "";
  clearPictures();
  $("progress").value = 0;
  setState("queued", "sending...");
  aborter = new AbortController();
  const body = request();
  try {
    await streamJob(runUrl(run.name, "generate"), body, {
      queued: (d) => { jobId = d.job; setState("queued", d.ahead ? `waiting: ${d.ahead} ahead` : "loading the model..."); },
      start: (d) => { $("progress").max = d.total; setState("running", `0 / ${d.total} steps on ${d.device}`); },
      step: (d) => {
        $("progress").value = d.done;
        $("progress-text").textContent = `${d.done} / ${d.total} steps`;
        showFrame($("frame-xt"), d.x_t);
        showFrame($("frame-x0"), d.x0);
      },
      done: async (d) => {
        await showResults(d);
        setState("done", `${body.n} images in ${d.seconds.toFixed(1)} s (seed ${d.seed})`);
      },
      cancelled: () => setState("cancelled", "cancelled"),
      error: (d) => { $("generate-error").textContent = d.message; setState("error", ""); },
    }, aborter.signal);
  } catch (err) {
    if (err.name === "AbortError") setState("cancelled", "cancelled");
    else { $("generate-error").textContent = err.message; setState("error", ""); }
  }
  if ($("panel-generate").dataset.state === "running" || $("panel-generate").dataset.state === "queued") {
    setState("error", "the connection ended early");  // the server went away mid-stream
  }
  jobId = null;
  aborter = null;
}

async function cancel() {
  if (jobId) {
    try { await send(`/api/jobs/${jobId}`, "DELETE"); return; } catch (_) { /* finished meanwhile */ }
  }
  if (aborter) aborter.abort();
}

export function setup(context) {
  info = context.info;
  for (const s of info.samplers) $("sampler").add(new Option(s.name, s.name));
  $("n").max = info.limits.max_images;
  $("n").value = Math.min(16, info.limits.max_images);
  $("sampler").addEventListener("change", samplerChanged);
  $("generate-form").addEventListener("submit", start);
  $("cancel").addEventListener("click", cancel);
  $("seed-random").addEventListener("click", () => { $("seed").value = Math.floor(Math.random() * 2 ** 31); });
}

export function showRun(chosen) {
  run = chosen;
  $("sampler").value = run.sample.sampler;
  samplerChanged();
  $("eta").value = run.sample.eta;
  $("steps").max = run.timesteps;
  const classes = run.conditioning === "class";
  $("row-class").hidden = !classes;
  $("row-guidance").hidden = run.conditioning === "none";  // class or text: classifier-free guidance
  $("row-prompt").hidden = run.conditioning !== "text";
  $("prompt-limit").textContent = promptLimit(run);
  $("guidance").value = run.sample.guidance_scale;
  const select = $("class");
  select.replaceChildren(new Option("all, in turn", "all"));
  for (let c = 0; classes && c < run.num_classes; c++) select.add(new Option(String(c), String(c)));
  clearPictures();
  $("progress").value = 0;
  setState("idle", "");
}
