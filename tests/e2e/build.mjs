// Bundles the test page (page/) into dist/ with esbuild: offline, from node_modules only.
import { build } from "esbuild";
import { copyFile, mkdir } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));

export async function buildPage() {
  const out = join(here, "dist");
  await mkdir(out, { recursive: true });
  await build({
    entryPoints: [join(here, "page", "app.js")],
    outfile: join(out, "app.js"),
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    sourcemap: "inline",
    logLevel: "warning",
  });
  await copyFile(join(here, "page", "index.html"), join(out, "index.html"));
  return out;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  await buildPage();
}
