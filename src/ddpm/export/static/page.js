// The exported page: loads plan.json, onnxruntime-web (each file checked against its integrity hash)
// and model.onnx, then draws images with sampler.js when Generate is pressed. Nothing else is fetched.
import { firstChannels, gaussian, guide, sample } from "./sampler.js";

const $ = (id) => document.getElementById(id);
const MAX_SEED = 4294967295;
let spec = null, session = null, busy = false;

// For the tests: set `noise` to a list of arrays (x_T, then each fresh draw a stochastic sampler
// takes, in order) to replace the seeded draws; `result` holds the last images drawn, x in [-1, 1].
window.ddpmTest = { noise: null, result: null, runs: 0 };

function say(text, error = false) {
  const m = $("message");
  m.textContent = text;
  m.className = error ? "error" : "";
}

async function fetchChecked(url, integrity) {
  const response = await fetch(url, integrity ? { integrity } : {});
  if (!response.ok) throw new Error(`${url} answered HTTP ${response.status}`);
  return response;
}

function loadScript(src, integrity) {
  return new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = src;
    script.integrity = integrity;
    script.crossOrigin = "anonymous";
    script.onload = resolve;
    script.onerror = () => reject(new Error(`${src} could not be loaded or did not match its integrity hash`));
    document.head.append(script);
  });
}

async function start() {
  spec = await (await fetchChecked("plan.json")).json();
  const { base, files } = spec.runtime;
  await loadScript(base + files.js.name, files.js.integrity);
  const [glue, wasm] = await Promise.all([
    fetchChecked(base + files.mjs.name, files.mjs.integrity).then((r) => r.blob()),
    fetchChecked(base + files.wasm.name, files.wasm.integrity).then((r) => r.arrayBuffer()),
  ]);
  ort.env.wasm.wasmPaths = { mjs: URL.createObjectURL(new Blob([glue], { type: "text/javascript" })) };
  ort.env.wasm.wasmBinary = wasm;
  const model = await (await fetchChecked("model.onnx")).arrayBuffer();
  session = await ort.InferenceSession.create(model, { executionProviders: ["wasm"] });
  setUp();
}

function setUp() {
  const { condition: c, defaults: d, sampler: s, plan, run } = spec;
  $("about").textContent = `${run.name}${run.student ? " (a distilled student)" : ""}: ${s.name}, ${plan.times.length} ` +
    `steps, onnxruntime-web ${spec.runtime.version} on WebAssembly (${ort.env.wasm.numThreads || 1} thread(s)).`;
  if (c.kind !== "none") {
    const select = $("condition");
    const add = (value, text) => select.append(new Option(text, value));
    if (c.kind === "class") {
      $("condition-name").textContent = "Class";
      add("each", "each class in turn");
      c.labels.forEach((label, i) => add(String(i), label));
      add(String(c.null), "none (unconditional)");
    } else {
      $("condition-name").textContent = "Prompt";
      c.labels.forEach((label, i) => add(String(i), label));
      add(String(c.null), "no prompt (unconditional)");
    }
    $("row-condition").hidden = false;
    $("row-guidance").hidden = false;
  }
  $("guidance").value = String(d.guidance);
  $("seed").value = String(d.seed);
  $("n").value = String(d.n);
  $("generate").disabled = false;
  document.body.dataset.ready = "true";
  say("Ready: press Generate.");
}

// The fields, checked; a problem is one sentence for the page, never an exception in the console.
function readFields() {
  const text = (id) => $(id).value.trim();
  if (!/^\d+$/.test(text("seed")) || Number(text("seed")) > MAX_SEED) {
    return { problem: `The seed must be a whole number from 0 to ${MAX_SEED}.` };
  }
  const max = spec.defaults.max_images;
  if (!/^\d+$/.test(text("n")) || Number(text("n")) < 1 || Number(text("n")) > max) {
    return { problem: `Images must be a whole number from 1 to ${max}.` };
  }
  const n = Number(text("n"));
  let guidance = 1, labels = null;
  if (spec.condition.kind !== "none") {
    guidance = Number(text("guidance"));
    if (text("guidance") === "" || !Number.isFinite(guidance) || guidance < 0 || guidance > 50) {
      return { problem: "Guidance must be a number from 0 to 50 (1: plain conditional, larger: closer to the condition)." };
    }
    const choice = $("condition").value, count = spec.condition.labels.length;
    labels = Array.from({ length: n }, (_, i) => (choice === "each" ? i % count : Number(choice)));
    if (choice === String(spec.condition.null)) guidance = 1;  // nothing to guide towards
  }
  return { seed: Number(text("seed")), n, guidance, labels };
}

// The network as the sampler calls it: the doubled batch [cond; uncond] when guiding (guidance.py).
function modelFor(labels, batch) {
  const { channels: C, height: H, width: W } = spec.image;
  const per = C * H * W, outPer = (spec.denoiser.learned_variance ? 2 : 1) * per;
  return async (x, t, guidance) => {
    const guided = labels !== null && guidance !== 1;
    const rows = guided ? 2 * batch : batch;
    let xs = x;
    if (guided) {
      xs = new Float32Array(2 * x.length);
      xs.set(x);
      xs.set(x, x.length);
    }
    const feeds = {
      x: new ort.Tensor("float32", xs, [rows, C, H, W]),
      t: new ort.Tensor("float32", new Float32Array(rows).fill(t), [rows]),
    };
    if (spec.inputs.length === 3) {
      const ids = new BigInt64Array(rows).fill(BigInt(spec.condition.null));
      labels.forEach((label, i) => { ids[i] = BigInt(label); });
      feeds[spec.inputs[2]] = new ort.Tensor("int64", ids, [rows]);
    }
    const out = (await session.run(feeds)).prediction.data;
    return guided ? guide(out, batch, outPer, per, guidance) : firstChannels(out, batch, outPer, per);
  };
}

// Images [B, C, H, W] in [-1, 1] as one grid on `canvas`, GAP white pixels apart.
const GAP = 2;
function draw(canvas, x, batch) {
  const { channels: C, height: H, width: W } = spec.image;
  const cols = Math.ceil(Math.sqrt(batch)), rows = Math.ceil(batch / cols);
  const width = cols * (W + GAP) - GAP, height = rows * (H + GAP) - GAP;
  canvas.width = width;
  canvas.height = height;
  const image = new ImageData(width, height);
  image.data.fill(255);
  for (let b = 0; b < batch; b++) {
    const ox = (b % cols) * (W + GAP), oy = Math.floor(b / cols) * (H + GAP);
    for (let y = 0; y < H; y++) {
      for (let xx = 0; xx < W; xx++) {
        const p = 4 * ((oy + y) * width + ox + xx);
        for (let k = 0; k < 3; k++) {
          const v = x[((b * C + (C === 3 ? k : 0)) * H + y) * W + xx];
          image.data[p + k] = Math.round(Math.min(1, Math.max(0, (v + 1) / 2)) * 255);
        }
      }
    }
  }
  canvas.getContext("2d").putImageData(image, 0, 0);
}

async function generate(event) {
  event.preventDefault();
  if (busy || session === null) return;
  const fields = readFields();
  if (fields.problem) {
    say(fields.problem, true);
    return;
  }
  busy = true;
  $("generate").disabled = $("save").disabled = true;
  const { seed, n, guidance, labels } = fields;
  const { channels: C, height: H, width: W } = spec.image;
  const given = window.ddpmTest.noise ? window.ddpmTest.noise.map((a) => Float32Array.from(a)) : null;
  const stream = gaussian(seed);
  const noise = (count) => {
    if (given === null) return stream(count);
    const next = given.shift();
    if (!next || next.length !== count) throw new Error(`the test's noise ran out or has the wrong size (${count} wanted)`);
    return next;
  };
  const steps = spec.plan.times.length;
  try {
    const began = performance.now();
    const xT = noise(n * C * H * W);
    const x = await sample(spec, modelFor(labels, n), xT, n, guidance, noise, async (i, xt, x0) => {
      draw($("xt"), xt, n);
      draw($("x0"), x0, n);
      $("xt-caption").textContent = `x_t at step ${i + 1} of ${steps} (t = ${spec.plan.times[i]})`;
      say(`Step ${i + 1} of ${steps}…`);
      await new Promise((resolve) => setTimeout(resolve, 0));  // let the browser show it
    });
    const seconds = (performance.now() - began) / 1000;
    draw($("x0"), x, n);
    window.ddpmTest.result = Array.from(x);
    window.ddpmTest.seconds = seconds;
    window.ddpmTest.runs += 1;
    say(`Drew ${n} image${n === 1 ? "" : "s"} in ${seconds.toFixed(2)} s (${steps} steps of ${spec.sampler.name}, seed ${seed}).`);
    $("save").disabled = false;
  } catch (err) {
    say(`Drawing failed: ${err.message}`, true);
  } finally {
    busy = false;
    $("generate").disabled = false;
  }
}

function savePng() {
  $("x0").toBlob((blob) => {
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = `${spec.run.name}-seed${$("seed").value.trim()}.png`;
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  }, "image/png");
}

$("controls").addEventListener("submit", generate);
$("save").addEventListener("click", savePng);
start().catch((err) => {
  document.body.dataset.ready = "failed";
  say(`The page could not start: ${err.message}`, true);
});
