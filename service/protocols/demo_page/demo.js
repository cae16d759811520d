// The demo page: plain JavaScript, no build step, nothing fetched from another host.
"use strict";

const KEY_STORAGE = "modelserver-api-key";
const state = { key: sessionStorage.getItem(KEY_STORAGE) || "", strokes: [], config: {} };
const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- calling the API, errors in words

const STATUS_WORDS = {
  400: "The server could not use that input.",
  401: "This server needs an API key: enter it at the top of the page.",
  413: "That is too large for this server.",
  415: "That file type is not accepted: send a PNG or JPEG image.",
  422: "The server could not find what it needs in that input.",
  429: "Too many requests right now.",
  503: "The server is busy or restarting.",
  504: "The server took too long to answer.",
};

class ApiError extends Error {}

async function call(path, body, { answer = "json" } = {}) {
  const headers = state.key ? { "X-API-Key": state.key } : {};
  if (!(body instanceof FormData)) headers["Content-Type"] = "application/json";
  busy(true);
  hideError();
  try {
    const response = await fetch(path, { method: "POST", body, headers });
    if (!response.ok) throw await apiError(response);
    return answer === "json" ? await response.json() : await response.blob();
  } catch (error) {
    if (!(error instanceof ApiError)) throw new ApiError(`The server could not be reached (${error.message}).`);
    throw error;
  } finally {
    busy(false);
  }
}

async function apiError(response) {
  let detail = "";
  try { detail = (await response.json()).error || ""; } catch (_) { /* not JSON */ }
  const retry = response.headers.get("Retry-After");
  if (response.status === 401) $("key-form").hidden = false;
  const words = STATUS_WORDS[response.status] || `The server answered ${response.status}.`;
  return new ApiError(`${words} ${detail}${retry ? ` Try again in ${retry} s.` : ""}`.trim());
}

let pending = 0;
function busy(on) {
  pending += on ? 1 : -1;
  const status = $("status");
  status.textContent = pending > 0 ? "Working…" : "";
  status.classList.toggle("busy", pending > 0);
  document.body.setAttribute("aria-busy", pending > 0 ? "true" : "false");
}

function showError(error) {
  const box = $("error");
  box.textContent = error.message;
  box.hidden = false;
}

function hideError() { $("error").hidden = true; }

function guarded(action) {
  return (...args) => action(...args).catch(showError);
}

function bars(list, entries, highlight) {
  list.replaceChildren(...entries.map(([name, p]) => {
    const item = document.createElement("li");
    item.className = name === highlight ? "top" : "";
    item.innerHTML = `<span>${name}</span><span class="bar"><span style="width:${(100 * p).toFixed(1)}%"></span></span>` +
      `<span>${(100 * p).toFixed(1)}%</span>`;
    item.setAttribute("aria-label", `${name}: ${(100 * p).toFixed(1)} percent`);
    return item;
  }));
}

// ---------------------------------------------------------------- digits: drawing pad, heat map, not-a-digit flag

const pad = $("pad");
const pen = pad.getContext("2d");

function clearPad() {
  pen.fillStyle = "#fff";
  pen.fillRect(0, 0, pad.width, pad.height);
  $("heat").getContext("2d").clearRect(0, 0, pad.width, pad.height);
}

function redraw() {
  clearPad();
  pen.strokeStyle = "#111";
  pen.lineWidth = 18;
  pen.lineCap = pen.lineJoin = "round";
  for (const stroke of state.strokes) {
    pen.beginPath();
    stroke.forEach(([x, y], i) => (i ? pen.lineTo(x, y) : pen.moveTo(x, y)));
    if (stroke.length === 1) pen.lineTo(stroke[0][0] + 0.1, stroke[0][1]);
    pen.stroke();
  }
}

function padPoint(event) {
  const box = pad.getBoundingClientRect();
  return [(event.clientX - box.left) * (pad.width / box.width), (event.clientY - box.top) * (pad.height / box.height)];
}

let drawing = null;
let autoClassify = null;
pad.addEventListener("pointerdown", (event) => {
  pad.setPointerCapture(event.pointerId);
  drawing = [padPoint(event)];
  state.strokes.push(drawing);
  clearTimeout(autoClassify);
  redraw();
});
pad.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  drawing.push(padPoint(event));
  redraw();
});
for (const end of ["pointerup", "pointercancel"]) {
  pad.addEventListener(end, () => {
    if (!drawing) return;
    drawing = null;
    autoClassify = setTimeout(guarded(classifyDrawing), 600);  // after a pause in drawing
  });
}

function canvasBlob(canvas) {
  return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
}

async function classifyDrawing() {
  if (!state.strokes.length) return;
  await explainDigit(await canvasBlob(pad), { x: 0, y: 0, w: pad.width, h: pad.height });
}

async function explainDigit(file, placed) {
  const form = new FormData();
  form.append("image", file, "digit.png");
  const answer = await call("/digits/explain", form);
  $("digits-verdict").textContent = `It reads ${answer.label} (${(100 * answer.probabilities[answer.label]).toFixed(1)}%).`;
  $("digits-ood").hidden = answer.in_distribution;
  $("digits-result").dataset.label = answer.label;
  $("digits-result").dataset.inDistribution = answer.in_distribution;
  bars($("digits-bars"), answer.probabilities.map((p, digit) => [String(digit), p]), String(answer.label));
  paintHeat(answer.heatmap, placed);
}

function paintHeat(heatmap, placed) {
  const heat = $("heat");
  const context = heat.getContext("2d");
  context.clearRect(0, 0, heat.width, heat.height);
  if (!$("heat-toggle").checked) return;
  const rows = heatmap.length;
  const cols = heatmap[0].length;
  const top = Math.max(1e-9, ...heatmap.flat());
  const pixels = new ImageData(cols, rows);
  heatmap.forEach((row, y) => row.forEach((value, x) => {
    const at = 4 * (y * cols + x);
    pixels.data.set([255, 30, 30, Math.round(220 * Math.max(0, value) / top)], at);
  }));
  const scratch = document.createElement("canvas");
  scratch.width = cols;
  scratch.height = rows;
  scratch.getContext("2d").putImageData(pixels, 0, 0);
  context.imageSmoothingEnabled = true;
  context.drawImage(scratch, placed.x, placed.y, placed.w, placed.h);
  heat.dataset.painted = "true";
}

async function uploadDigit(event) {
  const file = event.target.files[0];
  if (!file) return;
  state.strokes = [];
  const image = await loadImage(file);
  const scale = Math.min(pad.width / image.width, pad.height / image.height);
  const placed = { w: image.width * scale, h: image.height * scale };
  placed.x = (pad.width - placed.w) / 2;
  placed.y = (pad.height - placed.h) / 2;
  clearPad();
  pen.drawImage(image, placed.x, placed.y, placed.w, placed.h);
  await explainDigit(file, placed);
}

function loadImage(file) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new ApiError("That file is not an image this browser can show."));
    image.src = URL.createObjectURL(file);
  });
}

// ---------------------------------------------------------------- sentiment: words coloured by weight

async function classifyText() {
  const text = $("sentiment-text").value;
  const answer = await call("/sentiment/explain", JSON.stringify({ texts: [text] }));
  const [result] = answer.results;
  $("sentiment-verdict").textContent = `${result.label[0].toUpperCase()}${result.label.slice(1)} ` +
    `(${(100 * result.probabilities[result.label]).toFixed(1)}%)${result.truncated ? ", only the start was read" : ""}.`;
  $("sentiment-result").dataset.label = result.label;
  bars($("sentiment-bars"), Object.entries(result.probabilities), result.label);
  showWords(text, result.tokens);
}

function showWords(text, tokens) {
  const strongest = Math.max(1e-9, ...tokens.map((t) => Math.abs(t.weight)));
  const ranked = [...tokens].sort((a, b) => b.weight - a.weight);
  const top = new Set(ranked.slice(0, Math.max(1, Math.ceil(tokens.length / 5))).filter((t) => t.weight > 0));
  const parts = [];
  let at = 0;
  for (const token of tokens) {
    parts.push(document.createTextNode(text.slice(at, token.start)));
    const mark = document.createElement("mark");
    const share = Math.abs(token.weight) / strongest;
    mark.textContent = token.text;
    mark.style.background = token.weight >= 0 ? `rgba(240, 140, 0, ${share})` : `rgba(40, 110, 220, ${share})`;
    mark.title = `weight ${token.weight.toFixed(3)}`;
    if (top.has(token)) mark.className = "strongest";
    parts.push(mark);
    at = token.end;
  }
  parts.push(document.createTextNode(text.slice(at)));
  $("sentiment-words").replaceChildren(...parts);
}

// ---------------------------------------------------------------- denoise: noisy / cleaned, maps, download

const MAX_DENOISE_SIDE = 512;
let denoiseSource = null;

async function chooseDenoiseFile(event) {
  const file = event.target.files[0];
  if (!file) return;
  denoiseSource = await loadImage(file);
  $("denoise-run").disabled = false;
  $("denoise-verdict").textContent = `${file.name}: ${denoiseSource.width} x ${denoiseSource.height} pixels. Press Clean it.`;
}

function gaussian() {
  const u = 1 - Math.random();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * Math.random());
}

async function noisyBlob(image, sigma) {
  const scale = Math.min(1, MAX_DENOISE_SIDE / Math.max(image.width, image.height));
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(image.width * scale);
  canvas.height = Math.round(image.height * scale);
  const context = canvas.getContext("2d");
  context.drawImage(image, 0, 0, canvas.width, canvas.height);
  if (sigma > 0) {
    const pixels = context.getImageData(0, 0, canvas.width, canvas.height);
    for (let i = 0; i < pixels.data.length; i += 4) {
      for (let c = 0; c < 3; c++) pixels.data[i + c] = Math.min(255, Math.max(0, pixels.data[i + c] + sigma * gaussian()));
    }
    context.putImageData(pixels, 0, 0);
  }
  return canvasBlob(canvas);
}

async function runDenoise() {
  if (!denoiseSource) return;
  const noisy = await noisyBlob(denoiseSource, Number($("sigma").value));
  const form = () => { const f = new FormData(); f.append("image", noisy, "noisy.png"); return f; };
  const [cleaned, explained] = await Promise.all([
    call("/denoise", form(), { answer: "blob" }),
    call("/denoise/explain", form()),
  ]);
  const cleanUrl = URL.createObjectURL(cleaned);
  $("noisy-img").src = URL.createObjectURL(noisy);
  $("clean-img").src = cleanUrl;
  $("noise-map").src = `data:image/png;base64,${explained.noise}`;
  $("uncertainty-map").src = `data:image/png;base64,${explained.uncertainty}`;
  $("download").href = cleanUrl;
  for (const id of ["compare", "maps", "download"]) $(id).hidden = false;
  const sigmas = explained.noise_sigma.map((s) => s.toFixed(1)).join(", ");
  $("denoise-verdict").textContent = `Cleaned. Noise level used: ${sigmas}` +
    (explained.noise_level_in_range ? "." : " - outside the levels the model was trained on, so trust it less.");
  $("denoise-result").dataset.done = "true";
}

function beforeAfter() {
  $("clean-img").style.clipPath = `inset(0 0 0 ${$("before-after").value}%)`;
}

// ---------------------------------------------------------------- wiring

async function start() {
  clearPad();
  try {
    state.config = await (await fetch("/demo/config.json")).json();
  } catch (_) { state.config = {}; }
  $("key-form").hidden = !(state.config.api_key_required && !state.key);
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.key = $("api-key").value.trim();
    sessionStorage.setItem(KEY_STORAGE, state.key);
    $("key-form").hidden = true;
    hideError();
  });
  $("digits-classify").addEventListener("click", guarded(classifyDrawing));
  $("digits-undo").addEventListener("click", () => { state.strokes.pop(); redraw(); });
  $("digits-clear").addEventListener("click", () => {
    state.strokes = [];
    redraw();
    $("digits-ood").hidden = true;
    $("digits-verdict").textContent = "Draw a digit, then press Classify.";
    $("digits-bars").replaceChildren();
  });
  $("digits-file").addEventListener("change", guarded(uploadDigit));
  $("heat-toggle").addEventListener("change", () => { if (!$("heat-toggle").checked) $("heat").getContext("2d").clearRect(0, 0, 280, 280); });
  $("sentiment-classify").addEventListener("click", guarded(classifyText));
  $("denoise-file").addEventListener("change", guarded(chooseDenoiseFile));
  $("denoise-run").addEventListener("click", guarded(runDenoise));
  $("sigma").addEventListener("input", () => { $("sigma-value").textContent = $("sigma").value; });
  $("before-after").addEventListener("input", beforeAfter);
  document.body.dataset.ready = "true";
}

start();
