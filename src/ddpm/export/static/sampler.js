// The run's sampler in the browser: one function per core of src/ddpm/sampling/ (ddim.py run_ddim,
// dpm_solver.py run_multistep, unipc.py run_unipc), the denoiser (denoiser.py, diffusion.py's
// predicted_x0_eps and clip_x0) and classifier-free guidance (guidance.py). The coefficients of every
// step come from plan.json, written by the same Python functions, so only the loops are here. Tensors
// are Float32Arrays of [B, C, H, W] and every operation rounds to float32 as PyTorch's fp32 does.

const f = Math.fround;

// a * x + b * y, elementwise, each product and the sum rounded to float32 (PyTorch: a * x + b * y).
function axpby(a, x, b, y) {
  const out = new Float32Array(x.length), fa = f(a), fb = f(b);
  for (let i = 0; i < x.length; i++) out[i] = f(f(fa * x[i]) + f(fb * y[i]));
  return out;
}

// x + c * y (PyTorch: x = x + c * m).
function addScaled(x, c, y) {
  const out = new Float32Array(x.length), fc = f(c);
  for (let i = 0; i < x.length; i++) out[i] = f(x[i] + f(fc * y[i]));
  return out;
}

function scale(c, x) {
  const out = new Float32Array(x.length), fc = f(c);
  for (let i = 0; i < x.length; i++) out[i] = f(fc * x[i]);
  return out;
}

// guidance.py _combine: uncond + w (cond - uncond) on the first C channels, as torch.lerp computes it
// (start + w (end - start) for |w| < 0.5, else end - (end - start)(1 - w)). `out` holds [cond; uncond]
// rows of `perRow` values each, of which the first `keep` are the prediction.
export function guide(out, batch, perRow, keep, w) {
  const res = new Float32Array(batch * keep), fw = f(w), rest = f(1 - fw);
  for (let b = 0; b < batch; b++) {
    const c0 = b * perRow, u0 = (batch + b) * perRow;
    for (let i = 0; i < keep; i++) {
      const start = out[u0 + i], end = out[c0 + i], diff = f(end - start);
      res[b * keep + i] = Math.abs(fw) < 0.5 ? f(start + f(fw * diff)) : f(end - f(diff * rest));
    }
  }
  return res;
}

// The first `keep` of every row of `perRow` values (diffusion.py split_output: the prediction part).
export function firstChannels(out, batch, perRow, keep) {
  if (perRow === keep) return out;
  const res = new Float32Array(batch * keep);
  for (let b = 0; b < batch; b++) res.set(out.subarray(b * perRow, b * perRow + keep), b * keep);
  return res;
}

// torch.quantile's linear interpolation of sorted values at q.
function quantile(sorted, q) {
  const pos = q * (sorted.length - 1), lo = Math.floor(pos), hi = Math.ceil(pos);
  return f(sorted[lo] + f(f(sorted[hi] - sorted[lo]) * f(pos - lo)));
}

// diffusion.py clip_x0: static clipping to [-1, 1], Imagen's dynamic thresholding, or none.
export function clipX0(x0, batch, d) {
  if (d.clip === "static") return x0.map((v) => Math.min(1, Math.max(-1, v)));
  if (d.clip !== "dynamic") return x0;
  const per = x0.length / batch, out = new Float32Array(x0.length);
  for (let b = 0; b < batch; b++) {
    const row = x0.subarray(b * per, (b + 1) * per);
    let s = Math.max(quantile(Float32Array.from(row, Math.abs).sort(), d.threshold_percentile), 1);
    if (d.threshold_max !== null) s = Math.min(s, f(d.threshold_max));
    for (let i = 0; i < per; i++) out[b * per + i] = f(Math.min(s, Math.max(-s, row[i])) / s);
  }
  return out;
}

// diffusion.py predicted_x0_eps: x0 and eps from the prediction under the objective at
// x = alpha x0 + sigma eps (alpha, sigma: doubles, as Python's math.sqrt gives them).
export function predictedX0Eps(pred, x, alpha, sigma, batch, d) {
  const n = x.length, fa = f(alpha), fs = f(sigma);
  let x0 = new Float32Array(n), eps = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    if (d.objective === "pred_noise") {
      x0[i] = f(f(x[i] - f(fs * pred[i])) / fa);
      eps[i] = pred[i];
    } else if (d.objective === "pred_x0") {
      x0[i] = pred[i];
      eps[i] = f(f(x[i] - f(fa * pred[i])) / fs);
    } else {  // pred_v: x0 = alpha x - sigma v, eps = sigma x + alpha v
      x0[i] = f(f(fa * x[i]) - f(fs * pred[i]));
      eps[i] = f(f(fs * x[i]) + f(fa * pred[i]));
    }
  }
  if (d.clip === "static" || d.clip === "dynamic") {
    x0 = clipX0(x0, batch, d);
    if (d.clipped_eps) for (let i = 0; i < n; i++) eps[i] = f(f(x[i] - f(fa * x0[i])) / fs);
  }
  return [x0, eps];
}

// ddim.py run_ddim: x = c_x0 x0 + c_eps eps (+ sigma z).
export async function ddim(denoise, x, plan, table, noise, callback) {
  for (let i = 0; i < plan.times.length; i++) {
    const [x0, eps] = await denoise(x, i);
    if (callback) await callback(i, x, x0);
    const [cX0, cEps, sigma] = table[i];
    x = axpby(cX0, x0, cEps, eps);
    if (sigma > 0) x = addScaled(x, sigma, noise(x.length));
  }
  return x;
}

// dpm_solver.py run_multistep: x = c_x x + sum_j c_m[j] x0_{i-j} (+ c_z z), newest prediction first.
export async function multistep(denoise, x, plan, table, order, noise, callback) {
  let history = [];
  for (let i = 0; i < plan.times.length; i++) {
    const [x0] = await denoise(x, i);
    if (callback) await callback(i, x, x0);
    history = [x0, ...history.slice(0, order - 1)];
    const [cX, cM, cZ] = table[i];
    x = scale(cX, x);
    for (let j = 0; j < Math.min(cM.length, history.length); j++) x = addScaled(x, cM[j], history[j]);
    if (cZ > 0) x = addScaled(x, cZ, noise(x.length));
  }
  return x;
}

// unipc.py run_unipc: the predictor of each step, and the corrector of the step before once the model
// has seen its result (no extra model call).
export async function unipc(denoise, x, plan, table, order, callback) {
  let history = [], xBefore = x;
  for (let i = 0; i < plan.times.length; i++) {
    const [x0] = await denoise(x, i);
    if (i > 0 && table[i - 1][1] !== null) {
      const [cX, cM, cNew] = table[i - 1][1];
      x = axpby(cX, xBefore, cNew, x0);
      for (let j = 0; j < Math.min(cM.length, history.length); j++) x = addScaled(x, cM[j], history[j]);
    }
    if (callback) await callback(i, x, x0);
    history = [x0, ...history.slice(0, order - 1)];
    const [cX, cM] = table[i][0];
    xBefore = x;
    x = scale(cX, x);
    for (let j = 0; j < Math.min(cM.length, history.length); j++) x = addScaled(x, cM[j], history[j]);
  }
  return x;
}

// The sampler plan.json names, from x_T to x_0. `model(x, t, guidance)` returns the (guided)
// prediction [B, C, H, W]; `noise(n)` gives n draws of N(0, 1) for the stochastic samplers.
export async function sample(spec, model, xT, batch, guidance, noise, callback) {
  const { plan, table, denoiser: d, sampler: s } = spec;
  const denoise = async (x, i) => {
    const ab = plan.alpha_bars[i];
    const pred = await model(x, plan.times[i], guidance);
    return predictedX0Eps(pred, x, Math.sqrt(ab), Math.sqrt(1 - ab), batch, d);
  };
  if (s.kind === "ddim") return ddim(denoise, xT, plan, table, noise, callback);
  if (s.kind === "unipc") return unipc(denoise, xT, plan, table, s.order, callback);
  return multistep(denoise, xT, plan, table, s.order, noise, callback);
}

// A seeded stream of N(0, 1) draws (mulberry32 and Box-Muller): the page's seed, not PyTorch's.
export function gaussian(seed) {
  let a = seed >>> 0, spare = null;
  const uniform = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return (n) => {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      if (spare !== null) { out[i] = spare; spare = null; continue; }
      const u = 1 - uniform(), v = uniform(), r = Math.sqrt(-2 * Math.log(u));
      out[i] = r * Math.cos(2 * Math.PI * v);
      spare = r * Math.sin(2 * Math.PI * v);
    }
    return out;
  };
}
