// The page: a run picker and one panel per view. Each panel is a module with
// setup(context) once and showRun(run) whenever the chosen run changes.
import { getJSON } from "./api.js";
import * as generate from "./generate.js";
import * as forward from "./forward.js";
import * as inpaint from "./inpaint.js";

const panels = { generate, forward, inpaint };
const $ = (id) => document.getElementById(id);

function describe(run) {
  if (run.error) return run.error;
  const [h, w] = run.image_size;
  const colour = run.channels === 1 ? "grayscale" : "colour";
  const cond = run.conditioning === "class" ? `${run.num_classes} classes`
    : run.conditioning === "text" ? "text prompts" : "unconditional";
  return `${run.dataset}, ${h}x${w} ${colour}, step ${run.step}, ${cond}, T = ${run.timesteps} (${run.beta_schedule})`;
}

// WAI-ARIA tabs: one tab in the Tab order (the selected one); Left/Right (wrapping), Home and
// End move between tabs and show each at once.
function showTab(name) {
  for (const button of document.querySelectorAll("#tabs [role=tab]")) {
    const selected = button.dataset.panel === name;
    button.setAttribute("aria-selected", String(selected));
    button.tabIndex = selected ? 0 : -1;
  }
  for (const key of Object.keys(panels)) $(`panel-${key}`).hidden = key !== name;
}

function setupTabs() {
  const tabs = [...document.querySelectorAll("#tabs [role=tab]")];
  tabs.forEach((tab, i) => {
    tab.addEventListener("click", () => showTab(tab.dataset.panel));
    tab.addEventListener("keydown", (event) => {
      const to = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[event.key];
      if (to === undefined) return;
      event.preventDefault();
      const next = tabs[(to + tabs.length) % tabs.length];
      showTab(next.dataset.panel);
      next.focus();
    });
  });
}

async function main() {
  let info, runs;
  try {
    [info, { runs }] = await Promise.all([getJSON("/api/info"), getJSON("/api/runs")]);
  } catch (err) {
    $("page-error").textContent = err.message;
    return;
  }
  const select = $("run");
  const usable = runs.filter((r) => !r.error);
  for (const run of runs) {
    const option = new Option(run.error ? `${run.name} (cannot be used)` : run.name, run.name);
    option.disabled = Boolean(run.error);
    option.title = describe(run);
    select.add(option);
  }
  if (!usable.length) {
    $("page-error").textContent = runs.length
      ? "None of the runs can be used yet (hover over them to see why)."
      : "There are no runs here yet: train one with `ddpm train`, then reload this page.";
    return;
  }
  const context = { info };
  for (const panel of Object.values(panels)) panel.setup(context);
  setupTabs();
  const choose = () => {
    const run = runs.find((r) => r.name === select.value);
    $("run-info").textContent = describe(run);
    for (const panel of Object.values(panels)) panel.showRun(run);
  };
  select.value = (usable.find((r) => r.name === info.default_run) || usable[0]).name;
  select.addEventListener("change", choose);
  choose();
  document.body.dataset.ready = "true";
}

main();
