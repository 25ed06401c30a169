// An image picker shared by the panels that work on one image: the run's training images as
// thumbnails (More shows more), plus uploads decoded by the server at the run's size.
import { getJSON, runUrl, send } from "./api.js";
import { pixelImage, scaleFor } from "./pixels.js";

const $ = (id) => document.getElementById(id);

// ids: { box, more, upload, error } element ids; onChoose(ref, img) when an image is chosen.
export function imagePicker(ids, onChoose) {
  let run = null, chosen = null, nextStart = 0;

  function choose(ref, img) {
    chosen = ref;
    for (const other of $(ids.box).querySelectorAll("img")) other.classList.toggle("chosen", other === img);
    onChoose(ref, img);
  }

  function addThumb(item) {
    const [h, w] = run.image_size;
    const img = pixelImage(item.png, w, h, scaleFor(Math.max(h, w), 48), item.image);
    img.title = item.label === null ? item.image : `${item.image}, class ${item.label}`;
    img.dataset.image = item.image;
    img.addEventListener("click", () => choose(item.image, img));
    $(ids.box).append(img);
    return img;
  }

  async function more() {
    try {
      const page = await getJSON(`${runUrl(run.name, "train-images")}?start=${nextStart}&count=24`);
      const imgs = page.images.map(addThumb);
      nextStart = page.start + page.images.length;
      $(ids.more).disabled = nextStart >= page.total;
      if (!chosen && imgs.length) choose(page.images[0].image, imgs[0]);
    } catch (err) {
      $(ids.error).textContent = err.message;  // e.g. the data set is not on this machine: upload instead
      $(ids.more).disabled = true;
    }
  }

  async function upload() {
    const file = $(ids.upload).files[0];
    if (!file) return;
    try {
      const done = await send(runUrl(run.name, "images"), "POST", file, file.type || "application/octet-stream");
      choose(done.image, addThumb({ image: done.image, png: done.png, label: null }));
    } catch (err) {
      $(ids.error).textContent = err.message;
    }
    $(ids.upload).value = "";
  }

  $(ids.more).addEventListener("click", more);
  $(ids.upload).addEventListener("change", upload);

  // a new run: no image chosen, the first page of its training images (the first one chosen)
  return async function showRun(chosenRun) {
    run = chosenRun;
    chosen = null;
    nextStart = 0;
    $(ids.box).replaceChildren();
    await more();
  };
}
