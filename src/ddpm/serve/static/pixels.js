// Pictures at whole-number magnifications: every image pixel becomes an equal square of screen
// pixels (uneven factors make some pixels a screen pixel wider than their neighbours).

export const FRAME = 256;  // the live frames are shown about this wide
export const THUMB = 64;  // finished images at least about this wide

// The whole-number factor that shows `size` image pixels closest to `target` screen pixels.
export function scaleFor(size, target) {
  return Math.max(1, Math.round(target / size));
}

function magnify(img, scale) {
  img.style.width = `${img.naturalWidth * scale}px`;
  img.style.height = `${img.naturalHeight * scale}px`;
  img.dataset.scale = String(scale);
}

// Show `url` in a live frame, magnified to about FRAME pixels wide once its size is known.
export function showFrame(img, url) {
  img.onload = () => magnify(img, scaleFor(Math.max(img.naturalWidth, img.naturalHeight), FRAME));
  img.src = url;
}

// An empty frame: no picture (and so no broken-image icon), the placeholder box shows instead.
export function clearFrame(img) {
  img.onload = null;
  img.removeAttribute("src");
  img.style.width = img.style.height = "";
  delete img.dataset.scale;
}

// The factor for finished images of `size` pixels (the larger side): at least `live`, the
// factor their live frame used, so a result is never smaller than while it was drawn.
export function resultScale(size, live) {
  return Math.max(live || 1, scaleFor(size, THUMB));
}

// An <img> of `url` shown `scale` times its `width` x `height` pixels.
export function pixelImage(url, width, height, scale, alt) {
  const img = document.createElement("img");
  img.src = url;
  img.alt = alt;
  img.width = width * scale;
  img.height = height * scale;
  img.dataset.scale = String(scale);
  return img;
}

// The factor a live frame showing the grid `url` uses (decoded here, so it is known before the
// frame's own copy has loaded).
export async function frameScaleOf(url) {
  const probe = new Image();
  probe.src = url;
  await probe.decode();
  return scaleFor(Math.max(probe.naturalWidth, probe.naturalHeight), FRAME);
}

// Clear a panel's pictures as a new run starts: its results box (hidden), their images and its live
// frames; until the run's first step they would pass for this run's (and stay under "cancelled").
export function clearPictures(results, images, frames) {
  results.hidden = true;
  images.replaceChildren();
  for (const frame of frames) clearFrame(frame);
}
