// largead view: the page's own code (an ES module; three.js comes from the page's import map).
//
// What it does:
//   - decodes the embedded arrays (base64 script elements, see largead/viewer/scene.py for the list);
//   - draws every point with three.js (one THREE.Points, colours recomputed per colour mode, render on demand);
//   - colour modes: scalar ramps (height, intensity), classes (ground truth, prediction) with a legend, ids
//     (superpoints, segments), PCA colours, and the similarity of every point's feature to a clicked point;
//   - picks points in screen space (the nearest point under the cursor), shows them in the camera images;
//   - a frame slider for sequences;
//   - exposes window.largeadViewer so that tests (and users, from the console) can drive it.
//
// Colours are shown exactly as computed: the renderer writes the sRGB bytes of the palettes unchanged
// (outputColorSpace = LinearSRGBColorSpace, colour management off), so a screenshot pixel of a point has the colour
// the legend shows.

import * as THREE from 'three';
import { OrbitControls } from 'three/addons/controls/OrbitControls.js';

// --------------------------------------------------------------------------------------------------------------
// The API object first, so that errors raised while starting up are recorded where tests look for them.
const api = { ready: false, errors: [], lastTimings: {} };
window.largeadViewer = api;
window.addEventListener('error', (event) => api.errors.push(String(event.message || event)));
window.addEventListener('unhandledrejection', (event) => api.errors.push(String(event.reason)));

// --------------------------------------------------------------------------------------------------------------
// Decoding the embedded data

const BASE64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const BASE64_LOOKUP = new Uint8Array(128);
for (let i = 0; i < BASE64.length; i++) BASE64_LOOKUP[BASE64.charCodeAt(i)] = i;

/** Decode standard base64 (no line breaks inside) into bytes. */
function decodeBase64(text) {
  const s = text.trim();
  if (s.length % 4 !== 0) throw new Error('embedded array: base64 length is not a multiple of 4');
  const pad = s.endsWith('==') ? 2 : s.endsWith('=') ? 1 : 0;
  const out = new Uint8Array((s.length / 4) * 3 - pad);
  let j = 0;
  for (let i = 0; i < s.length; i += 4) {
    const n = (BASE64_LOOKUP[s.charCodeAt(i)] << 18) | (BASE64_LOOKUP[s.charCodeAt(i + 1)] << 12)
      | (BASE64_LOOKUP[s.charCodeAt(i + 2)] << 6) | BASE64_LOOKUP[s.charCodeAt(i + 3)];
    out[j++] = n >> 16;
    if (j < out.length) out[j++] = (n >> 8) & 255;
    if (j < out.length) out[j++] = n & 255;
  }
  return out;
}

const ARRAY_TYPES = {
  float32: Float32Array, int8: Int8Array, uint8: Uint8Array, int16: Int16Array, uint16: Uint16Array,
  int32: Int32Array, uint32: Uint32Array,
};

/** The embedded array `name` as a typed array (null when the page has none). */
function readArray(name) {
  const el = document.getElementById('largead-array-' + name);
  if (!el) return null;
  const Type = ARRAY_TYPES[el.dataset.dtype];
  if (!Type) throw new Error(`embedded array ${name}: unknown dtype ${el.dataset.dtype}`);
  const bytes = decodeBase64(el.textContent);
  const shape = el.dataset.shape.split(',').filter((s) => s !== '').map(Number);
  const count = shape.reduce((a, b) => a * b, 1);
  if (bytes.byteLength !== count * Type.BYTES_PER_ELEMENT) {
    throw new Error(`embedded array ${name}: ${bytes.byteLength} bytes for shape [${shape}] of ${el.dataset.dtype}`);
  }
  const arr = new Type(bytes.buffer, 0, count);
  arr.shape = shape;
  return arr;
}

/** IEEE half-precision bit patterns -> Float32Array. */
function halfToFloat(bits) {
  const table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const frac = h & 0x3ff;
    if (exp === 0) table[h] = sign * Math.pow(2, -14) * (frac / 1024);
    else if (exp === 31) table[h] = frac ? NaN : sign * Infinity;
    else table[h] = sign * Math.pow(2, exp - 15) * (1 + frac / 1024);
  }
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = table[bits[i]];
  return out;
}

// --------------------------------------------------------------------------------------------------------------
// Data

const meta = JSON.parse(document.getElementById('largead-meta').textContent);
const N = meta.num_points;
const frames = meta.frames;
const arrays = {};
for (const name of ['positions', 'intensity', 'gt', 'pred', 'pca', 'superpoints', 'sp_palette', 'segments',
  'seg_palette', 'proj_index', 'proj_uv']) {
  arrays[name] = readArray(name);
}
const positions = arrays.positions;
const modes = meta.modes;
const modeByKey = Object.fromEntries(modes.map((m) => [m.key, m]));
const ramps = meta.ramps;
const IGNORE = meta.ignore_color;

// Features for the similarity mode: int8 / float16 (decoded here) / float32, and each point's norm.
let features = null;
let featureDim = 0;
let featureNorms = null;
if (meta.features) {
  const raw = readArray(meta.features.array);
  features = meta.features.dtype === 'float16' ? halfToFloat(raw) : raw;
  featureDim = meta.features.dim;
  featureNorms = new Float32Array(N);
  for (let i = 0; i < N; i++) {
    let s = 0;
    const o = i * featureDim;
    for (let d = 0; d < featureDim; d++) s += features[o + d] * features[o + d];
    featureNorms[i] = Math.sqrt(s);
  }
}

/** Which frame point i belongs to. */
function frameOf(i) {
  for (let k = frames.length - 1; k >= 0; k--) if (i >= frames[k].offset) return k;
  return 0;
}

// Camera projections: the list of all cameras of all frames, and for every point the projections that show it.
const cameraList = [];
frames.forEach((f, k) => f.cameras.forEach((c, j) => cameraList.push({ frame: k, index: j, meta: c })));
const P = arrays.proj_index ? arrays.proj_index.length : 0;
const projCamera = new Int32Array(P);
cameraList.forEach((c, slot) => projCamera.fill(slot, c.meta.proj[0], c.meta.proj[1]));
const projStart = new Int32Array(N + 1);
const projList = new Int32Array(P);
if (P) {
  for (let p = 0; p < P; p++) projStart[arrays.proj_index[p] + 1]++;
  for (let i = 0; i < N; i++) projStart[i + 1] += projStart[i];
  const fill = projStart.slice(0, N);
  for (let p = 0; p < P; p++) projList[fill[arrays.proj_index[p]]++] = p;
}

// --------------------------------------------------------------------------------------------------------------
// State

const state = {
  mode: null,
  frame: 0,
  showAll: false,
  pick: -1, // clicked point
  hover: -1, // point under the cursor
  similarity: null, // Float32Array(N) after a pick
  simRange: [0, 1],
  pointSize: meta.initial.point_size || 2,
};
const colors = new Uint8Array(N * 3);
let screenCache = null; // projected screen positions of the visible points, rebuilt after the camera moves

// --------------------------------------------------------------------------------------------------------------
// Colour modes

function rampIndex(t) {
  return Math.max(0, Math.min(255, Math.round(t * 255)));
}

function fillRamp(values, stride, offset, lo, hi, lut) {
  const span = hi - lo || 1;
  for (let i = 0; i < N; i++) {
    const c = lut[rampIndex((values[i * stride + offset] - lo) / span)];
    colors[3 * i] = c[0]; colors[3 * i + 1] = c[1]; colors[3 * i + 2] = c[2];
  }
}

function fillClasses(ids, palette) {
  for (let i = 0; i < N; i++) {
    const id = ids[i];
    const c = id >= 0 && id < palette.length ? palette[id] : IGNORE;
    colors[3 * i] = c[0]; colors[3 * i + 1] = c[1]; colors[3 * i + 2] = c[2];
  }
}

function fillIds(ids, palette) {
  const n = palette.length / 3;
  for (let i = 0; i < N; i++) {
    const id = ids[i];
    if (id >= 0 && id < n) {
      colors[3 * i] = palette[3 * id]; colors[3 * i + 1] = palette[3 * id + 1]; colors[3 * i + 2] = palette[3 * id + 2];
    } else {
      colors[3 * i] = IGNORE[0]; colors[3 * i + 1] = IGNORE[1]; colors[3 * i + 2] = IGNORE[2];
    }
  }
}

/** Cosine similarity of every point's feature to point q's (Float32Array of N). */
function similarityTo(q) {
  const D = featureDim;
  const query = new Float32Array(D);
  for (let d = 0; d < D; d++) query[d] = features[q * D + d];
  const nq = featureNorms[q];
  const out = new Float32Array(N);
  for (let i = 0; i < N; i++) {
    const o = i * D;
    let s = 0;
    for (let d = 0; d < D; d++) s += features[o + d] * query[d];
    const den = featureNorms[i] * nq;
    out[i] = den > 0 ? s / den : 0;
  }
  return out;
}

/** The 2nd percentile of the similarities (bottom of the ramp); the top is the clicked point's own, 1. */
function similarityRange(sims, q) {
  const sorted = Float32Array.from(sims).sort();
  return [sorted[Math.floor(0.02 * (sorted.length - 1))], sims[q]];
}

function fillSimilarity() {
  if (!state.similarity) {
    colors.fill(0);
    for (let i = 0; i < N; i++) { colors[3 * i] = IGNORE[0]; colors[3 * i + 1] = IGNORE[1]; colors[3 * i + 2] = IGNORE[2]; }
    return;
  }
  const [lo, hi] = state.simRange;
  const lut = ramps.viridis;
  const span = hi - lo || 1;
  const sims = state.similarity;
  for (let i = 0; i < N; i++) {
    const c = lut[sims[i] >= hi ? 255 : rampIndex((sims[i] - lo) / span)];
    colors[3 * i] = c[0]; colors[3 * i + 1] = c[1]; colors[3 * i + 2] = c[2];
  }
}

/** Recompute the colour of every point for the current mode. */
function computeColors() {
  const m = modeByKey[state.mode];
  if (m.kind === 'ramp') {
    const lut = ramps[m.ramp];
    if (m.field === 'z') fillRamp(positions, 3, 2, m.range[0], m.range[1], lut);
    else fillRamp(arrays[m.field], 1, 0, m.range[0], m.range[1], lut);
  } else if (m.kind === 'classes') {
    fillClasses(arrays[m.array], m.palette);
  } else if (m.kind === 'ids') {
    fillIds(arrays[m.array], arrays[m.palette_array]);
  } else if (m.kind === 'rgb') {
    colors.set(arrays[m.array]);
  } else if (m.kind === 'similarity') {
    fillSimilarity();
  }
}

// --------------------------------------------------------------------------------------------------------------
// three.js scene

THREE.ColorManagement.enabled = false;
const host = document.getElementById('canvas-host');
let renderer;
try {
  renderer = new THREE.WebGLRenderer({ antialias: false });
} catch (err) {
  showMessage('This page needs WebGL, which this browser could not start: ' + err.message);
  throw err;
}
renderer.outputColorSpace = THREE.LinearSRGBColorSpace;
renderer.setPixelRatio(window.devicePixelRatio || 1);
renderer.setClearColor(0x14161a, 1);
host.appendChild(renderer.domElement);
renderer.domElement.tabIndex = 0;

const scene = new THREE.Scene();
const camera = new THREE.PerspectiveCamera(55, 1, 0.1, 5000);
camera.up.set(0, 0, 1); // LiDAR frame: z up
const controls = new OrbitControls(camera, renderer.domElement);
controls.enableDamping = false;
controls.screenSpacePanning = true;

const geometry = new THREE.BufferGeometry();
geometry.setAttribute('position', new THREE.BufferAttribute(positions, 3));
const colorAttribute = new THREE.BufferAttribute(colors, 3, true);
geometry.setAttribute('color', colorAttribute);
const material = new THREE.PointsMaterial({ size: state.pointSize, sizeAttenuation: false, vertexColors: true });
const cloud = new THREE.Points(geometry, material);
cloud.frustumCulled = false;
scene.add(cloud);

/** A single-point marker drawn on top of everything (clicked / hovered point). */
function makeMarker(color, size) {
  const g = new THREE.BufferGeometry();
  g.setAttribute('position', new THREE.BufferAttribute(new Float32Array(3), 3));
  const m = new THREE.PointsMaterial({ color, size, sizeAttenuation: false, depthTest: false });
  const p = new THREE.Points(g, m);
  p.renderOrder = 10;
  p.visible = false;
  p.frustumCulled = false;
  scene.add(p);
  return p;
}
const pickMarker = makeMarker(0xff2a2a, 11);
const hoverMarker = makeMarker(0xffffff, 7);

function placeMarker(marker, i) {
  marker.visible = i >= 0;
  if (i < 0) return;
  const a = marker.geometry.attributes.position;
  a.array[0] = positions[3 * i]; a.array[1] = positions[3 * i + 1]; a.array[2] = positions[3 * i + 2];
  a.needsUpdate = true;
}

// Orientation aids: a 10 m grid at ground level and the sensor trajectory with the current sensor position.
const sensorPositions = frames.map((f) => new THREE.Vector3(f.pose[0][3], f.pose[1][3], f.pose[2][3]));
const extent = (() => {
  const f = frames[0];
  const r = [];
  const step = Math.max(1, Math.floor(f.count / 5000));
  for (let i = f.offset; i < f.offset + f.count; i += step) r.push(Math.hypot(positions[3 * i], positions[3 * i + 1]));
  r.sort((a, b) => a - b);
  return Math.max(10, r.length ? r[Math.floor(0.9 * (r.length - 1))] : 30);
})();
const groundZ = (() => {
  const zs = [];
  const f = frames[0];
  const step = Math.max(1, Math.floor(f.count / 5000));
  for (let i = f.offset; i < f.offset + f.count; i += step) zs.push(positions[3 * i + 2]);
  zs.sort((a, b) => a - b);
  return zs.length ? zs[Math.floor(0.05 * (zs.length - 1))] : 0;
})();
{
  const size = 20 * Math.ceil(extent / 10);
  const grid = new THREE.GridHelper(size, size / 10, 0x3a4150, 0x262b34);
  grid.rotation.x = Math.PI / 2; // GridHelper lies in x-z; the LiDAR ground is x-y
  grid.position.set(sensorPositions[0].x, sensorPositions[0].y, groundZ);
  scene.add(grid);
  if (frames.length > 1) {
    const line = new THREE.Line(new THREE.BufferGeometry().setFromPoints(sensorPositions),
      new THREE.LineBasicMaterial({ color: 0x8b929c }));
    scene.add(line);
  }
}
const sensorMarker = makeMarker(0xffcf4a, 9);

function initialCameraPose() {
  const centre = new THREE.Vector3();
  sensorPositions.forEach((p) => centre.add(p));
  centre.divideScalar(sensorPositions.length);
  const r = extent;
  return { target: centre.clone(), position: centre.clone().add(new THREE.Vector3(-0.75 * r, -0.45 * r, 0.6 * r)) };
}

function resetView() {
  const pose = initialCameraPose();
  camera.position.copy(pose.position);
  controls.target.copy(pose.target);
  controls.update();
  requestRender();
}

// Rendering on demand: a change asks for one frame; nothing is drawn while nothing changes.
let renderPending = false;
function renderNow() {
  renderPending = false;
  renderer.render(scene, camera);
}
function requestRender() {
  if (renderPending) return;
  renderPending = true;
  requestAnimationFrame(renderNow);
}
controls.addEventListener('change', () => { screenCache = null; requestRender(); });

function resize() {
  const w = host.clientWidth || 1;
  const h = host.clientHeight || 1;
  renderer.setSize(w, h, false);
  camera.aspect = w / h;
  camera.updateProjectionMatrix();
  screenCache = null;
  renderNow();
}
new ResizeObserver(resize).observe(host);

// --------------------------------------------------------------------------------------------------------------
// Picking: the point nearest to the viewer among those drawn within a few pixels of the cursor.

function visibleRange() {
  if (state.showAll || frames.length === 1) return [0, N];
  const f = frames[state.frame];
  return [f.offset, f.offset + f.count];
}

function projectVisible() {
  camera.updateMatrixWorld();
  const m = new THREE.Matrix4().multiplyMatrices(camera.projectionMatrix, camera.matrixWorldInverse).elements;
  const [a, b] = visibleRange();
  const w = host.clientWidth;
  const h = host.clientHeight;
  const xy = new Float32Array((b - a) * 2);
  const depth = new Float32Array(b - a);
  for (let i = a; i < b; i++) {
    const x = positions[3 * i];
    const y = positions[3 * i + 1];
    const z = positions[3 * i + 2];
    const cw = m[3] * x + m[7] * y + m[11] * z + m[15];
    const k = i - a;
    if (cw <= camera.near) { depth[k] = Infinity; continue; }
    xy[2 * k] = ((m[0] * x + m[4] * y + m[8] * z + m[12]) / cw * 0.5 + 0.5) * w;
    xy[2 * k + 1] = (0.5 - (m[1] * x + m[5] * y + m[9] * z + m[13]) / cw * 0.5) * h;
    depth[k] = cw;
  }
  return { a, b, xy, depth };
}

/** Index of the point under canvas position (x, y) in CSS pixels, or -1. */
function pickAt(x, y) {
  if (!screenCache) screenCache = projectVisible();
  const { a, b, xy, depth } = screenCache;
  const radius = Math.max(4, state.pointSize * 0.75 + 2);
  const r2 = radius * radius;
  let best = -1;
  let bestDepth = Infinity;
  for (let k = 0; k < b - a; k++) {
    if (depth[k] === Infinity) continue;
    const dx = xy[2 * k] - x;
    const dy = xy[2 * k + 1] - y;
    if (dx * dx + dy * dy <= r2 && depth[k] < bestDepth) { bestDepth = depth[k]; best = a + k; }
  }
  return best;
}

// Click (press and release without dragging) picks; moving without a button pressed hovers.
let pressAt = null;
renderer.domElement.addEventListener('pointerdown', (e) => { pressAt = { x: e.clientX, y: e.clientY, t: performance.now() }; });
renderer.domElement.addEventListener('pointerup', (e) => {
  if (!pressAt || e.button !== 0) return;
  const moved = Math.hypot(e.clientX - pressAt.x, e.clientY - pressAt.y);
  pressAt = null;
  if (moved > 4) return;
  const rect = renderer.domElement.getBoundingClientRect();
  const i = pickAt(e.clientX - rect.left, e.clientY - rect.top);
  if (i >= 0) pickIndex(i); else clearPick();
});
let hoverQueued = null;
renderer.domElement.addEventListener('pointermove', (e) => {
  if (e.buttons) return;
  const rect = renderer.domElement.getBoundingClientRect();
  const first = hoverQueued === null;
  hoverQueued = [e.clientX - rect.left, e.clientY - rect.top];
  if (first) {
    requestAnimationFrame(() => {
      const [x, y] = hoverQueued;
      hoverQueued = null;
      setHover(pickAt(x, y));
    });
  }
});
renderer.domElement.addEventListener('pointerleave', () => setHover(-1));

// --------------------------------------------------------------------------------------------------------------
// Camera strip: each image of the current frame with its projected points in the current colours, and rings
// where the hovered (white) and clicked (red) points land.

const strip = document.getElementById('strip');
const imageCache = new Map(); // data URL -> promise of the decoded HTMLImageElement
const pixelCache = new Map(); // data URL -> ImageData of the image at its canvas size
let stripCameras = []; // [{slot, meta, base, overlay, ctx, octx, pixels: ImageData of the background}]

function loadImage(url) {
  if (!imageCache.has(url)) {
    const img = new Image();
    img.src = url;
    imageCache.set(url, img.decode().then(() => img));
  }
  return imageCache.get(url);
}

/** Background of a camera canvas: the image, or its superpixel overlay in the superpoint mode. */
function backgroundUrl(c) {
  return state.mode === 'superpoints' && c.meta.overlay ? c.meta.overlay : c.meta.image;
}

async function buildStrip() {
  const k = state.frame;
  const cams = cameraList.map((c, slot) => ({ ...c, slot })).filter((c) => c.frame === k);
  strip.hidden = cameraList.length === 0;
  strip.replaceChildren();
  stripCameras = [];
  for (const c of cams) {
    const [w, h] = c.meta.size;
    const box = document.createElement('div');
    box.className = 'cam';
    const base = document.createElement('canvas');
    base.className = 'base';
    base.width = w; base.height = h;
    const overlay = document.createElement('canvas');
    overlay.width = w; overlay.height = h;
    const name = document.createElement('div');
    name.className = 'cam-name';
    name.textContent = `${c.meta.name} (${c.meta.proj[1] - c.meta.proj[0]} points)`;
    box.append(base, overlay, name);
    strip.append(box);
    const entry = { ...c, base, overlay, ctx: base.getContext('2d', { willReadFrequently: true }), octx: overlay.getContext('2d'), pixels: null, background: null };
    overlay.addEventListener('pointermove', (e) => setHover(imagePointAt(entry, e)));
    overlay.addEventListener('pointerleave', () => setHover(-1));
    overlay.addEventListener('click', (e) => { const i = imagePointAt(entry, e); if (i >= 0) pickIndex(i); });
    stripCameras.push(entry);
  }
  await drawStrip();
}

/** Redraw the points on every camera canvas (after a mode or frame change). */
async function drawStrip() {
  for (const c of stripCameras) {
    const url = backgroundUrl(c);
    if (c.background !== url) {
      if (!pixelCache.has(url)) {
        const img = await loadImage(url);
        c.ctx.drawImage(img, 0, 0, c.base.width, c.base.height);
        pixelCache.set(url, c.ctx.getImageData(0, 0, c.base.width, c.base.height));
      }
      c.pixels = pixelCache.get(url);
      c.background = url;
    }
    const out = new ImageData(new Uint8ClampedArray(c.pixels.data), c.pixels.width, c.pixels.height);
    const W = out.width;
    const H = out.height;
    const sx = W / c.meta.width;
    const sy = H / c.meta.height;
    // half the size of a drawn point in canvas pixels: about 1.5 screen pixels however the canvas is scaled
    const r = Math.max(1, Math.round(1.5 * c.base.height / Math.max(1, c.base.clientHeight || c.base.height)));
    const outline = state.mode === 'superpoints'; // points on the overlay have their region's colour: ring them
    const d = out.data;
    const [p0, p1] = c.meta.proj;
    for (let p = p0; p < p1; p++) {
      const i = arrays.proj_index[p];
      const x = Math.floor((arrays.proj_uv[2 * p] + 0.5) * sx);
      const y = Math.floor((arrays.proj_uv[2 * p + 1] + 0.5) * sy);
      const e = outline ? r + 1 : r;
      for (let yy = Math.max(0, y - e); yy < Math.min(H, y + e); yy++) {
        for (let xx = Math.max(0, x - e); xx < Math.min(W, x + e); xx++) {
          const o = 4 * (yy * W + xx);
          const inner = !outline || (Math.abs(xx - x + 0.5) < r && Math.abs(yy - y + 0.5) < r);
          d[o] = inner ? colors[3 * i] : 0;
          d[o + 1] = inner ? colors[3 * i + 1] : 0;
          d[o + 2] = inner ? colors[3 * i + 2] : 0;
          d[o + 3] = 255;
        }
      }
    }
    c.ctx.putImageData(out, 0, 0);
  }
  drawHighlights();
}

/** Where point i lands in the current frame's images: [{camera, name, u, v, x, y}] (u, v: original image pixels). */
function imageHits(i) {
  if (i < 0) return [];
  const hits = [];
  for (let s = projStart[i]; s < projStart[i + 1]; s++) {
    const p = projList[s];
    const c = stripCameras.find((e) => e.slot === projCamera[p]);
    if (!c) continue;
    const u = arrays.proj_uv[2 * p];
    const v = arrays.proj_uv[2 * p + 1];
    hits.push({ camera: c.index, name: c.meta.name, u, v,
      x: (u + 0.5) * c.base.width / c.meta.width, y: (v + 0.5) * c.base.height / c.meta.height });
  }
  return hits;
}

function drawHighlights() {
  for (const c of stripCameras) c.octx.clearRect(0, 0, c.overlay.width, c.overlay.height);
  const ring = (i, color, radius) => {
    for (const hit of imageHits(i)) {
      const c = stripCameras.find((e) => e.index === hit.camera);
      const ctx = c.octx;
      ctx.lineWidth = 2.5;
      ctx.strokeStyle = 'black';
      ctx.beginPath(); ctx.arc(hit.x, hit.y, radius, 0, 2 * Math.PI); ctx.stroke();
      ctx.lineWidth = 1.5;
      ctx.strokeStyle = color;
      ctx.beginPath(); ctx.arc(hit.x, hit.y, radius, 0, 2 * Math.PI); ctx.stroke();
    }
  };
  ring(state.pick, '#ff2a2a', 8);
  ring(state.hover, '#ffffff', 6);
}

/** The projected point nearest to the mouse on a camera canvas (within 6 canvas pixels), or -1. */
function imagePointAt(c, e) {
  const rect = c.overlay.getBoundingClientRect();
  const x = (e.clientX - rect.left) * c.overlay.width / rect.width;
  const y = (e.clientY - rect.top) * c.overlay.height / rect.height;
  const sx = c.base.width / c.meta.width;
  const sy = c.base.height / c.meta.height;
  let best = -1;
  let bestD = 36;
  for (let p = c.meta.proj[0]; p < c.meta.proj[1]; p++) {
    const dx = (arrays.proj_uv[2 * p] + 0.5) * sx - x;
    const dy = (arrays.proj_uv[2 * p + 1] + 0.5) * sy - y;
    const d = dx * dx + dy * dy;
    if (d <= bestD) { bestD = d; best = arrays.proj_index[p]; } // later = nearer to the camera
  }
  return best;
}

// --------------------------------------------------------------------------------------------------------------
// Side panel: legend, point information, about

const legendEl = document.getElementById('legend');
const infoEl = document.getElementById('point-info');

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'style') e.style.cssText = v; else if (k === 'class') e.className = v; else e.setAttribute(k, v);
  }
  e.append(...children);
  return e;
}

function rgbCss(c) {
  return `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
}

function rampCss(lut) {
  const stops = [];
  for (let k = 0; k <= 16; k++) stops.push(rgbCss(lut[Math.round((k / 16) * 255)]));
  return `linear-gradient(to right, ${stops.join(', ')})`;
}

function fmt(x, digits = 2) {
  return Number.isFinite(x) ? x.toFixed(digits) : String(x);
}

function renderLegend() {
  const m = modeByKey[state.mode];
  const rows = [el('h3', {}, m.label)];
  if (m.kind === 'ramp' || m.kind === 'similarity') {
    const range = m.kind === 'ramp' ? m.range : state.simRange;
    rows.push(el('div', { class: 'ramp-bar', style: `background: ${rampCss(ramps[m.ramp])}` }));
    rows.push(el('div', { class: 'ramp-labels' }, el('span', {}, fmt(range[0]) + (m.unit ? ' ' + m.unit : '')),
      el('span', {}, fmt(range[1]) + (m.unit ? ' ' + m.unit : ''))));
    if (m.kind === 'similarity') {
      rows.push(el('div', { class: 'muted' }, state.pick >= 0
        ? `cosine similarity to point #${state.pick} (red); bottom of the ramp: 2nd percentile`
        : 'click a point to colour every point by the similarity of its feature to the clicked one'));
    } else {
      rows.push(el('div', { class: 'muted' }, '1st to 99th percentile'));
    }
  } else if (m.kind === 'classes') {
    for (const entry of m.legend) {
      rows.push(el('div', { class: 'legend-row' + (entry.count ? '' : ' absent') },
        el('span', { class: 'swatch', style: `background: ${entry.color}` }), el('span', {}, entry.name),
        el('span', { class: 'count' }, String(entry.count))));
    }
    rows.push(el('div', { class: 'muted' }, 'colours: ' + m.palette_source
      + (frames.length > 1 ? `; counts over all ${frames.length} frames` : '')));
  } else if (m.kind === 'ids') {
    rows.push(el('div', { class: 'muted' }, m.legend_text));
  } else if (m.kind === 'rgb') {
    rows.push(el('div', { class: 'muted' }, 'first three principal components of the features (2nd-98th '
      + 'percentile of each) as red, green, blue: similar colours, similar features'));
  }
  legendEl.replaceChildren(...rows);
}

function className(mode, id) {
  if (!mode || id < 0 || id >= mode.names.length) return 'ignore';
  return mode.names[id];
}

function renderPointInfo() {
  const i = state.hover >= 0 ? state.hover : state.pick;
  if (i < 0) { infoEl.replaceChildren(el('div', { class: 'muted' }, 'hover a point')); return; }
  const k = frameOf(i);
  const rows = [
    ['point', `#${i} (${i - frames[k].offset} of frame ${k})`],
    ['x, y, z', `${fmt(positions[3 * i])}, ${fmt(positions[3 * i + 1])}, ${fmt(positions[3 * i + 2])} m`],
    ['intensity', fmt(arrays.intensity[i], 3)],
  ];
  for (const f of meta.point_fields) {
    const v = arrays[f.array][i];
    const mode = modeByKey[f.mode];
    rows.push([f.label, mode && mode.kind === 'classes' ? className(mode, v) : v < 0 ? 'none' : `#${v}`]);
  }
  if (state.similarity && state.pick >= 0) rows.push(['similarity', `${fmt(state.similarity[i], 3)} to #${state.pick}`]);
  const hits = imageHits(i);
  if (hits.length) rows.push(['in images', hits.map((h) => `${h.name} (${fmt(h.u, 0)}, ${fmt(h.v, 0)})`).join(', ')]);
  const title = el('h3', {}, i === state.hover ? 'hovered point' : 'clicked point');
  infoEl.replaceChildren(title, el('table', {}, ...rows.map(([a, b]) => el('tr', {}, el('td', {}, a), el('td', {}, b)))));
}

function renderAbout() {
  const rows = [['points', `${N} in ${frames.length} frame(s)`], ...meta.info, ...meta.notes.map((n) => ['note', n]),
    ['made by', meta.generator + ', three.js r' + THREE.REVISION]];
  document.getElementById('about-table').replaceChildren(
    ...rows.map(([a, b]) => el('tr', {}, el('td', {}, a), el('td', {}, b))));
}

function showMessage(text) {
  const m = document.getElementById('message');
  m.textContent = text;
  m.hidden = false;
}

// --------------------------------------------------------------------------------------------------------------
// Actions (also the public API)

function setMode(key) {
  if (!modeByKey[key]) throw new Error(`unknown colour mode ${key}; this page has ${Object.keys(modeByKey).join(', ')}`);
  const t0 = performance.now();
  state.mode = key;
  document.getElementById('mode').value = key;
  computeColors();
  colorAttribute.needsUpdate = true;
  const t1 = performance.now();
  renderLegend();
  renderNow();
  api.lastTimings.colors_ms = t1 - t0;
  return drawStrip();
}

function pickIndex(i) {
  if (!(i >= 0 && i < N)) throw new Error(`point index ${i} out of range 0..${N - 1}`);
  state.pick = i;
  if (!state.showAll && frameOf(i) !== state.frame) setFrame(frameOf(i));
  placeMarker(pickMarker, i);
  let done = Promise.resolve();
  if (features) {
    const t0 = performance.now();
    state.similarity = similarityTo(i);
    state.simRange = similarityRange(state.similarity, i);
    api.lastTimings.similarity_ms = performance.now() - t0;
    done = setMode('similarity');
  } else {
    drawHighlights();
    requestRender();
  }
  renderPointInfo();
  return done.then(revealInStrip);
}

/** Scroll the camera strip so that the first image showing the clicked point is in view. */
function revealInStrip() {
  const hit = imageHits(state.pick)[0];
  if (!hit) return;
  const c = stripCameras.find((e) => e.index === hit.camera);
  const box = c.base.parentElement;
  const left = box.offsetLeft - strip.offsetLeft;
  if (left < strip.scrollLeft || left + box.offsetWidth > strip.scrollLeft + strip.clientWidth) {
    strip.scrollLeft = Math.max(0, left - (strip.clientWidth - box.offsetWidth) / 2);
  }
}

function clearPick() {
  state.pick = -1;
  placeMarker(pickMarker, -1);
  drawHighlights();
  renderPointInfo();
  requestRender();
}

function setHover(i) {
  if (i === state.hover) return;
  state.hover = i;
  placeMarker(hoverMarker, i);
  drawHighlights();
  renderPointInfo();
  requestRender();
}

function updateFrameRange() {
  const [a, b] = visibleRange();
  geometry.setDrawRange(a, b - a);
  screenCache = null;
}

function setFrame(k) {
  if (!(k >= 0 && k < frames.length)) throw new Error(`frame ${k} out of range 0..${frames.length - 1}`);
  state.frame = k;
  document.getElementById('frame').value = String(k);
  const f = frames[k];
  document.getElementById('frame-label').textContent = `${k + 1} / ${frames.length}  ${f.name}`;
  placeMarker(sensorMarker, -1);
  sensorMarker.visible = frames.length > 1;
  sensorMarker.geometry.attributes.position.array.set([sensorPositions[k].x, sensorPositions[k].y, sensorPositions[k].z]);
  sensorMarker.geometry.attributes.position.needsUpdate = true;
  updateFrameRange();
  renderNow();
  return buildStrip();
}

function setShowAll(on) {
  state.showAll = Boolean(on);
  document.getElementById('all-frames').checked = state.showAll;
  updateFrameRange();
  renderNow();
}

function setPointSize(s) {
  state.pointSize = Number(s);
  material.size = state.pointSize;
  document.getElementById('size').value = String(s);
  screenCache = null;
  renderNow();
}

/** Rotate the view a little every animation frame for `count` frames; report render and frame times (ms).
 * render_ms: renderer.render() until the GPU has finished (a one-pixel readPixels waits for it);
 * frame_interval_ms: time between animation frames, i.e. what a user sees while orbiting. */
async function benchmark(count = 120) {
  const gl = renderer.getContext();
  const pixel = new Uint8Array(4);
  const render = [];
  const interval = [];
  let last = null;
  for (let k = 0; k < count; k++) {
    const now = await new Promise((resolve) => requestAnimationFrame(resolve));
    if (last !== null) interval.push(now - last);
    last = now;
    const offset = camera.position.clone().sub(controls.target).applyAxisAngle(new THREE.Vector3(0, 0, 1), 0.02);
    camera.position.copy(controls.target).add(offset);
    camera.lookAt(controls.target);
    const t0 = performance.now();
    renderer.render(scene, camera);
    gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, pixel); // waits for the GPU's work
    render.push(performance.now() - t0);
  }
  controls.update();
  const stats = (xs) => {
    const s = Float64Array.from(xs).sort();
    return { median: s[Math.floor(s.length / 2)], p95: s[Math.floor(0.95 * (s.length - 1))] };
  };
  return { frames: count, points_drawn: visibleRange()[1] - visibleRange()[0], render_ms: stats(render),
    frame_interval_ms: stats(interval), canvas: [renderer.domElement.width, renderer.domElement.height] };
}

/** Milliseconds to switch to colour mode `key`: recolour, upload, render (GPU finished), redraw the images. */
async function timeModeSwitch(key) {
  const t0 = performance.now();
  await setMode(key);
  const gl = renderer.getContext();
  gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, new Uint8Array(4));
  return performance.now() - t0;
}

// --------------------------------------------------------------------------------------------------------------
// Wiring the controls

function setupControls() {
  document.getElementById('title').textContent = meta.title;
  document.getElementById('title').title = meta.title;
  const select = document.getElementById('mode');
  modes.forEach((m, k) => select.append(el('option', { value: m.key }, `${k + 1}. ${m.label}`)));
  select.addEventListener('change', () => setMode(select.value));
  const size = document.getElementById('size');
  size.value = String(state.pointSize);
  size.addEventListener('input', () => setPointSize(size.value));
  document.getElementById('reset').addEventListener('click', resetView);
  if (frames.length > 1) {
    document.getElementById('frames').hidden = false;
    const slider = document.getElementById('frame');
    slider.max = String(frames.length - 1);
    slider.addEventListener('input', () => setFrame(Number(slider.value)));
    document.getElementById('all-frames').addEventListener('change', (e) => setShowAll(e.target.checked));
  }
  window.addEventListener('keydown', (e) => {
    if (e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement) return;
    if (e.key === 'r' || e.key === 'R') resetView();
    else if (e.key >= '1' && e.key <= '9' && modes[Number(e.key) - 1]) setMode(modes[Number(e.key) - 1].key);
    else if (e.key === 'ArrowRight' && state.frame + 1 < frames.length) setFrame(state.frame + 1);
    else if (e.key === 'ArrowLeft' && state.frame > 0) setFrame(state.frame - 1);
    else if (e.key === 'Escape') clearPick();
  });
}

Object.assign(api, {
  meta,
  numPoints: N,
  numFrames: frames.length,
  modes: () => modes.map((m) => m.key),
  getMode: () => state.mode,
  setMode,
  pickIndex,
  clearPick,
  getPick: () => state.pick,
  hoverIndex: setHover,
  getHover: () => state.hover,
  setFrame,
  getFrame: () => state.frame,
  setShowAll,
  visibleRange,
  setPointSize,
  resetView,
  /** Camera position and orbit target, in the first frame's LiDAR coordinates (metres). */
  getView: () => ({ position: camera.position.toArray(), target: controls.target.toArray() }),
  setView: ({ position, target }) => {
    camera.position.fromArray(position);
    controls.target.fromArray(target);
    controls.update();
    renderNow();
  },
  renderNow,
  /** Colours of points start..end-1 as a plain array [r0, g0, b0, r1, ...]. */
  getColors: (start = 0, end = N) => Array.from(colors.subarray(3 * start, 3 * end)),
  getPointColor: (i) => Array.from(colors.subarray(3 * i, 3 * i + 3)),
  getSimilarity: (i) => (state.similarity ? state.similarity[i] : null),
  similarityRange: () => state.simRange.slice(),
  rampColor: (name, t) => ramps[name][rampIndex(t)].slice(),
  imageHits,
  /** Screen position (CSS pixels in the canvas) of point i, or null behind the camera. */
  screenPosition: (i) => {
    const v = new THREE.Vector3(positions[3 * i], positions[3 * i + 1], positions[3 * i + 2]).project(camera);
    if (v.z > 1) return null;
    return [(v.x * 0.5 + 0.5) * host.clientWidth, (0.5 - v.y * 0.5) * host.clientHeight];
  },
  pickAt,
  benchmark,
  timeModeSwitch,
});

async function start() {
  setupControls();
  renderAbout();
  state.mode = meta.initial.mode; // colour the points before the first frame is drawn
  computeColors();
  resize();
  resetView();
  await setFrame(0);
  await setMode(meta.initial.mode);
  if (meta.initial.query !== null && meta.initial.query !== undefined) await pickIndex(meta.initial.query);
  renderNow();
  api.ready = true;
}

start().catch((err) => {
  api.errors.push(String(err && err.stack ? err.stack : err));
  showMessage('The viewer failed to start: ' + err);
  console.error(err);
});
