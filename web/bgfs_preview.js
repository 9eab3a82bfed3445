// BGFS heatmap preview: after a run of ROI Detect, a Fixer (latent or image) or Anatomy Score, draw the ROI crops
// with their heatmaps and keypoints, with a frame scrubber and (Fixers) a before/after toggle.
// Data: the node's ui["bgfs_preview"][0] (nodes/preview_ui.py): sprite sheets in ComfyUI's temp folder, tile i at
// column i % cols, row floor(i / cols). For tests the canvas exposes dataset.bgfsFrame, bgfsHeatDrawn, bgfsHeatPixels.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const NODES = new Set(["BGFSROIDetect", "BGFSLatentAnatomyFixer", "BGFSAnatomyScore", "BGFSImageAnatomyFixer"]);
const VIEW = 256; // canvas side, px
const CONTROLS = 30; // height of the control row, px
const HEAT_MIN = 12; // grey levels below this stay transparent (background of a Gaussian heatmap)

// "inferno"-like colour map: dark purple -> red -> yellow, as a 256-entry RGB lookup table
const STOPS = [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]];
const LUT = new Uint8Array(256 * 3);
for (let v = 0; v < 256; v++) {
  const t = (v / 255) * (STOPS.length - 1);
  const k = Math.min(Math.floor(t), STOPS.length - 2);
  for (let c = 0; c < 3; c++) LUT[v * 3 + c] = Math.round(STOPS[k][c] + (STOPS[k + 1][c] - STOPS[k][c]) * (t - k));
}

function viewURL(ref) {
  const q = new URLSearchParams({ filename: ref.filename, subfolder: ref.subfolder ?? "", type: ref.type ?? "temp" });
  return api.apiURL(`/view?${q}`);
}

function loadImage(ref) {
  if (!ref) return Promise.resolve(null);
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error(`BGFS preview: could not load ${ref.filename}`));
    img.src = viewURL(ref);
  });
}

function el(tag, style, props = {}) {
  const e = Object.assign(document.createElement(tag), props);
  Object.assign(e.style, style);
  return e;
}

class Preview {
  constructor(node) {
    this.node = node;
    this.frame = 0;
    this.after = false;
    this.root = el("div", { display: "flex", flexDirection: "column", alignItems: "center", gap: "4px" },
      { className: "bgfs-preview" });
    this.root.dataset.bgfsNode = String(node.id);
    this.canvas = el("canvas", { width: "100%", maxWidth: `${VIEW}px`, aspectRatio: "1", background: "#111" },
      { width: VIEW, height: VIEW });
    this.heat = el("canvas", {}, { width: VIEW, height: VIEW }); // offscreen overlay: colour-mapped heat tile
    const row = el("div", { display: "flex", gap: "6px", alignItems: "center", width: "100%", maxWidth: `${VIEW}px`,
      font: "12px sans-serif", color: "#ccc" });
    this.slider = el("input", { flex: "1" }, { type: "range", min: 0, max: 0, step: 1, value: 0 });
    this.label = el("span", { minWidth: "84px", textAlign: "right" });
    this.toggle = el("button", { display: "none", font: "inherit" }, { textContent: "before", title: "Toggle before / after the fix" });
    this.slider.addEventListener("input", () => this.show(Number(this.slider.value)));
    this.toggle.addEventListener("click", () => {
      this.after = !this.after;
      this.draw();
    });
    row.append(this.slider, this.label, this.toggle);
    this.root.append(this.canvas, row);
    // stop the canvas from treating clicks and keys on the controls as graph interactions
    for (const ev of ["pointerdown", "mousedown", "wheel", "keydown"]) row.addEventListener(ev, (e) => e.stopPropagation());
  }

  async set(payload) {
    const token = (this.token = (this.token ?? 0) + 1); // a newer run may finish loading first
    const [crops, heat, afterCrops, afterHeat] = await Promise.all(
      [payload.crops, payload.heat, payload.after_crops, payload.after_heat].map(loadImage));
    if (token !== this.token) return;
    this.p = payload;
    this.img = { crops, heat, afterCrops, afterHeat };
    const hasAfter = Boolean(afterCrops || afterHeat || payload.after_keypoints);
    this.after = hasAfter && this.after;
    this.toggle.style.display = hasAfter ? "" : "none";
    this.slider.max = String(payload.n - 1);
    this.show(Math.min(this.frame, payload.n - 1));
  }

  show(i) {
    this.frame = i;
    this.slider.value = String(i);
    this.draw();
  }

  draw() {
    const { p, img } = this;
    if (!p) return;
    const i = this.frame;
    const after = this.after;
    const crops = (after && img.afterCrops) || img.crops;
    const heat = after ? img.afterHeat : img.heat;
    const kps = (after ? p.after_keypoints : p.keypoints)?.[i];
    const t = p.tile;
    const sx = (i % p.cols) * t;
    const sy = Math.floor(i / p.cols) * t;
    const ctx = this.canvas.getContext("2d");
    ctx.clearRect(0, 0, VIEW, VIEW);
    ctx.drawImage(crops, sx, sy, t, t, 0, 0, VIEW, VIEW);
    const ds = this.canvas.dataset;
    ds.bgfsHeatPixels = "0";
    if (heat) ds.bgfsHeatPixels = String(this.drawHeat(ctx, heat, sx, sy, t));
    ds.bgfsHeatDrawn = heat ? "1" : "0";
    if (kps) {
      const s = VIEW / t;
      for (const kp of kps) {
        if (!kp || kp[2] <= 0) continue;
        ctx.beginPath();
        ctx.arc(kp[0] * s, kp[1] * s, 3, 0, 2 * Math.PI);
        ctx.fillStyle = `rgba(80, 230, 255, ${0.4 + 0.6 * Math.min(1, kp[2])})`;
        ctx.fill();
        ctx.strokeStyle = "#000";
        ctx.stroke();
      }
    }
    const f = p.frames?.[i] ?? i;
    ds.bgfsFrame = String(f);
    ds.bgfsView = after ? "after" : "before";
    this.label.textContent = p.labels?.[i] ?? `${f + 1}/${p.total ?? p.n}`; // "12/43 left": frame and hand
    this.toggle.textContent = after ? "after" : "before";
  }

  // Colour-map the grey heat tile onto the overlay canvas; returns how many of its pixels are not transparent.
  drawHeat(ctx, heat, sx, sy, t) {
    const hctx = this.heat.getContext("2d", { willReadFrequently: true });
    hctx.clearRect(0, 0, VIEW, VIEW);
    hctx.drawImage(heat, sx, sy, t, t, 0, 0, VIEW, VIEW);
    const data = hctx.getImageData(0, 0, VIEW, VIEW);
    const px = data.data;
    let count = 0;
    for (let j = 0; j < px.length; j += 4) {
      const v = px[j]; // greyscale: R = G = B
      px[j] = LUT[v * 3];
      px[j + 1] = LUT[v * 3 + 1];
      px[j + 2] = LUT[v * 3 + 2];
      px[j + 3] = v < HEAT_MIN ? 0 : Math.min(180, 1.2 * v); // fades in with the heat (no hard rim), caps
      // below opaque so the crop stays visible under broad heat
      if (px[j + 3] > 0) count++;
    }
    hctx.putImageData(data, 0, 0);
    ctx.drawImage(this.heat, 0, 0);
    return count;
  }
}

app.registerExtension({
  name: "bgfs.preview",
  beforeRegisterNodeDef(nodeType, nodeData) {
    if (!NODES.has(nodeData.name)) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      onExecuted?.apply(this, arguments);
      const payload = output?.bgfs_preview?.[0];
      if (!payload) {
        // nothing to show this run (the region was not found): hide the last run's crops, which are not this one's
        if (this.bgfsPreview) {
          this.bgfsPreview.root.style.display = "none";
          // and give back its room: the frontend asks getMinHeight whether or not the element shows
          this.setSize([this.size[0], this.computeSize()[1]]);
          app.graph.setDirtyCanvas(true, true);
        }
        return;
      }
      if (!this.bgfsPreview) {
        this.bgfsPreview = new Preview(this);
        const widget = this.addDOMWidget("bgfs_preview", "bgfs_preview", this.bgfsPreview.root, {
          serialize: false,
          hideOnZoom: false,
          getMinHeight: () => (this.bgfsPreview.root.style.display === "none" ? 0 : VIEW + CONTROLS + 8),
        });
        widget.serialize = false; // not a value: keeps widgets_values of saved workflows unchanged
        this.setSize([Math.max(this.size[0], VIEW + 24), Math.max(this.size[1], this.computeSize()[1])]);
      }
      if (this.bgfsPreview.root.style.display === "none") {
        this.bgfsPreview.root.style.display = "flex";
        this.setSize([this.size[0], Math.max(this.size[1], this.computeSize()[1])]);  // its room back
      }
      this.bgfsPreview.root.style.display = "flex";
      this.bgfsPreview.set(payload).catch((e) => console.error(e));
      app.graph.setDirtyCanvas(true, true);
    };
  },
});
