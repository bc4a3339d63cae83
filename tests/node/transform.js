#!/usr/bin/env node
// Runs a dashboard panel's Grafana transformations with Grafana's own
// @grafana/data, so the tests check what Grafana would display rather than a
// re-implementation of it.
//
// stdin:  {"frames": [DataFrameJSON, ...],       // as Grafana's backend sends them
//          "transformations": [...],             // the panel's "transformations"
//          "reduce": {"calcs": ["sum"]}}         // optional: a stat panel's reducer
// stdout: {"frames": [{"name", "refId", "fields": [{"name", "displayName", "type",
//                                                    "labels", "values"}]}],
//          "reduced": [{"frame", "displayName", "calcs": {...}}]}   // when asked
//
// The transformer registry is initialised the way Grafana's own tests do it
// (standardTransformersRegistry.setInit(...)), from the transformers that
// @grafana/data ships; the UI editors Grafana adds are irrelevant here.
//
// package.json pins the @grafana/data of the Grafana that deploy/compose.yaml
// runs. WATTLEDGER_GRAFANA_DATA=/path/to/node_modules/@grafana/data runs the
// same check on another release (the script works with 11.x to 13.x).
'use strict';

const GRAFANA_DATA = process.env.WATTLEDGER_GRAFANA_DATA || '@grafana/data';

// @grafana/data reads browser globals: 11.x reads window.grafanaBootData
// (feature toggles) while loading; 13.x reads window.__grafanaSceneContext
// (whether a Scenes dashboard already interpolated variables) when it
// transforms, but must load without a window (its react-use would take Node
// for a browser). An empty window means "no toggles, not Scenes"; no
// variables appear in our transformations anyway.
function loadGrafanaData() {
  try {
    return require(GRAFANA_DATA);
  } catch (err) {
    if (!(err instanceof ReferenceError) || !/window/.test(err.message)) throw err;
    globalThis.window = {};
    return require(GRAFANA_DATA);
  }
}
const {
  dataFrameFromJSON,
  getFieldDisplayName,
  reduceField,
  standardTransformers,
  standardTransformersRegistry,
  transformDataFrame,
} = loadGrafanaData();
if (typeof globalThis.window === 'undefined') globalThis.window = {};
const GRAFANA_VERSION = require(`${GRAFANA_DATA}/package.json`).version;

// Up to 12.x the registry item's `transformation` is the transformer itself;
// 13.x calls it as a loader. A loader function carrying the transformer's
// properties serves both.
function eagerOrLazy(transformer) {
  const loader = () => Promise.resolve(transformer);
  for (const key of Object.keys(transformer)) {
    Object.defineProperty(loader, key, { value: transformer[key], enumerable: true });
  }
  return loader;
}

function getStandardTransformers() {
  // standardTransformers lists some transformers twice under old names
  // (seriesToColumns is joinByField): register each id once.
  const byId = new Map();
  for (const t of Object.values(standardTransformers)) byId.set(t.id, t);
  return [...byId.values()].map((t) => ({
    id: t.id,
    aliasIds: t.aliasIds,
    name: t.name,
    description: t.description,
    defaultOptions: t.defaultOptions,
    transformation: eagerOrLazy(t),
    editor: () => null,
  }));
}

function readStdin() {
  return new Promise((resolve, reject) => {
    const chunks = [];
    process.stdin.on('data', (c) => chunks.push(c));
    process.stdin.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    process.stdin.on('error', reject);
  });
}

// JSON has no NaN/undefined: say which non-numbers came out instead of hiding them.
function plain(v) {
  if (v === undefined) return { nonNumber: 'undefined' };
  if (typeof v === 'number' && !Number.isFinite(v)) return { nonNumber: String(v) };
  return v;
}

function describe(frames) {
  return frames.map((frame) => ({
    name: frame.name === undefined ? null : frame.name,
    refId: frame.refId === undefined ? null : frame.refId,
    length: frame.length,
    fields: frame.fields.map((field) => ({
      name: field.name,
      displayName: getFieldDisplayName(field, frame, frames),
      type: field.type,
      labels: field.labels || {},
      values: Array.from(field.values, plain),
    })),
  }));
}

function transform(frames, transformations) {
  return new Promise((resolve, reject) => {
    // No variables appear in our transformations: interpolation is the identity.
    transformDataFrame(transformations, frames, { interpolate: (v) => v }).subscribe({ next: resolve, error: reject });
  });
}

async function main() {
  standardTransformersRegistry.setInit(getStandardTransformers);
  const input = JSON.parse(await readStdin());
  const frames = (input.frames || []).map((f) => dataFrameFromJSON(f));
  const out = await transform(frames, input.transformations || []);
  const result = { grafanaData: GRAFANA_VERSION, frames: describe(out) };
  if (input.reduce) {
    const calcs = input.reduce.calcs;
    result.reduced = [];
    for (const frame of out) {
      for (const field of frame.fields) {
        if (field.type !== 'number') continue;
        const values = reduceField({ field, reducers: calcs });
        const picked = {};
        for (const c of calcs) picked[c] = plain(values[c]);
        result.reduced.push({ frame: frame.name || null, displayName: getFieldDisplayName(field, frame, out), calcs: picked });
      }
    }
  }
  process.stdout.write(JSON.stringify(result));
}

main().catch((err) => {
  process.stderr.write(`transform.js: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
