// Validates cert-manager and prometheus-operator objects (one JSON object per line on stdin)
// with the @kubernetes-models validators, which are generated from those projects' CRDs.
// Usage: node charts/validate-custom-resources.mjs NODE_MODULES_DIR < objects.jsonl
// Prints one line per object; exits 1 if any is invalid or of a kind it has no validator for.
import { readFileSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const modules = process.argv[2];
const packages = {
  "cert-manager.io": "@kubernetes-models/cert-manager",
  "monitoring.coreos.com": "@kubernetes-models/prometheus-operator",
};
let failed = 0;
let passed = 0;
for (const line of readFileSync(0, "utf8").split("\n")) {
  if (!line.trim()) continue;
  const obj = JSON.parse(line);
  const [group, version] = obj.apiVersion.split("/");
  const ref = `${obj.kind} ${obj.metadata?.name}`;
  const pkg = packages[group];
  if (!pkg) {
    console.log(`  FAIL  ${ref}: no validator for ${obj.apiVersion}`);
    failed++;
    continue;
  }
  const file = path.join(modules, pkg, group, version, `${obj.kind}.js`);
  try {
    const mod = await import(pathToFileURL(file).href);
    new mod[obj.kind](obj).validate();
    console.log(`  ok    ${ref} (${obj.apiVersion})`);
    passed++;
  } catch (e) {
    console.log(`  FAIL  ${ref}: ${String(e.message ?? e).split("\n").slice(0, 5).join("; ")}`);
    failed++;
  }
}
console.log(`custom resources: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
