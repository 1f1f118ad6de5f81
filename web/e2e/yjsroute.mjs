// routeYjs makes a browser context load the demo page's Yjs modules from
// web/e2e/node_modules instead of the CDN its import map names (the tests
// run without internet). It reads the import map from the page a node
// serves, checks each URL pins the version installed here (so the tests
// exercise the version users get), bundles each specifier with esbuild
// (bare imports of another mapped specifier stay imports, so the page
// loads one copy of Yjs), and answers the map's URLs with the bundles.
import assert from "node:assert/strict";
import fs from "node:fs";
import { build } from "esbuild";

export async function yjsModules(nodeURL) {
  const html = await (await fetch(nodeURL + "/")).text();
  const m = html.match(/<script type="importmap">([\s\S]*?)<\/script>/);
  assert.ok(m, "the demo page has an import map");
  const imports = JSON.parse(m[1]).imports;
  const mods = new Map(); // url -> javascript
  for (const [spec, url] of Object.entries(imports)) {
    const pkg = spec.split("/")[0];
    const { version } = JSON.parse(fs.readFileSync(new URL(`./node_modules/${pkg}/package.json`, import.meta.url)));
    assert.ok(url.includes(`${pkg}@${version}`), `import map pins ${pkg}@${version} (installed in web/e2e): ${url}`);
    const out = await build({
      stdin: { contents: `export * from ${JSON.stringify(spec)};`, resolveDir: new URL(".", import.meta.url).pathname },
      bundle: true,
      format: "esm",
      write: false,
      logLevel: "silent",
      external: Object.keys(imports).filter((s) => s !== spec),
    });
    mods.set(url, out.outputFiles[0].text);
  }
  return mods;
}

export async function routeYjs(context, mods) {
  for (const [url, js] of mods) {
    const want = new URL(url).href;
    await context.route((u) => u.href === want, (route) =>
      route.fulfill({ status: 200, contentType: "text/javascript; charset=utf-8", headers: { "Access-Control-Allow-Origin": "*" }, body: js }),
    );
  }
}
