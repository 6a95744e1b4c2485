// Drives the status page of a running `ordo run` in headless Chromium (Debian's chromium,
// through playwright-core) and checks what a user sees. Run by tests/status_page.rs (and the
// Kafka test with two members); exits non-zero with a line naming what failed.
//
//   node status_page.mjs --url http://127.0.0.1:PORT --partitions N --owners A[,B]
//        [--produce K] [--screenshot FILE] [--header "name,name"]
//
// --header names header items that must show (a value beside each name).
//
// --produce K posts K reservations through the member's own API (one of them with a
// reservation number holding a <script> tag), expects some partition's lag to rise above 0
// and every lag to fall back to 0 with processed/s above 0, and looks the tag up by key.
import { chromium } from "playwright-core";

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, "")] = process.argv[i + 1];
const url = args.url.replace(/\/$/, "");
const n = Number(args.partitions);
const owners = (args.owners || "").split(",").filter(Boolean);
const produce = Number(args.produce || 0);

function fail(what) {
  console.error("status page: " + what);
  process.exit(1);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const errors = [];
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("dialog", async (d) => { errors.push("a dialog opened: " + d.message()); await d.dismiss(); });
  const response = await page.goto(url + "/");
  if (!response || response.status() !== 200) fail("GET / answered " + (response && response.status()));
  const external = await page.evaluate(() =>
    [...document.querySelectorAll("[src], link[href]")].map((e) => e.getAttribute("src") || e.getAttribute("href"))
      .filter((u) => /^(https?:)?\/\//.test(u)));
  if (external.length) fail("the page loads something from outside: " + external.join(", "));

  const rows = async () => page.$$eval("#partitions tbody tr", (trs) => trs.map((tr) => {
    const td = [...tr.querySelectorAll("td")].map((t) => t.textContent);
    const num = (s) => (s === "–" ? null : Number(s.replace(/,/g, "")));
    return { partition: Number(td[0]), owner: td[1], state: td[3], lag: num(td[6]), rate: num(td[8]) };
  }));
  await page.waitForFunction((n) => document.querySelectorAll("#partitions tbody tr").length === n, n, { timeout: 30000 })
    .catch(() => fail("the partition table never showed " + n + " rows"));
  // Every partition owned, by one of the members expected, and each member owning some.
  await page.waitForFunction((owners) => {
    const cells = [...document.querySelectorAll("#partitions tbody td.owner")].map((t) => t.textContent);
    return cells.length && cells.every((c) => owners.includes(c)) && owners.every((o) => cells.includes(o));
  }, owners, { timeout: 60000 }).catch(async () =>
    fail("owners " + JSON.stringify((await rows()).map((r) => r.owner)) + ", expected each of " + JSON.stringify(owners)));
  // Each owner links to that member's own page.
  const links = await page.$$eval("#partitions tbody td.owner a", (as) => as.map((a) => a.getAttribute("href")));
  if (owners.length > 1 && links.length !== n) fail("owner links " + JSON.stringify(links) + ", expected one per partition");
  const shown = await page.$$eval("#header dt", (dts) => dts.map((dt) => [dt.textContent, dt.nextElementSibling && dt.nextElementSibling.textContent]));
  for (const name of (args.header || "").split(",").filter(Boolean)) {
    const item = shown.find(([k]) => k === name);
    if (!item || !item[1]) fail("the header shows no " + name + ": " + JSON.stringify(shown));
  }
  const seen = new Set((await rows()).map((r) => r.partition));
  for (let p = 0; p < n; p++) if (!seen.has(p)) fail("partition " + p + " is missing from the table");

  if (produce > 0) {
    const tricky = "R-<script>alert(1)</script>";
    const post = async (no, i) => {
      const r = await fetch(url + "/v1/reservations", {
        method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify({ event_id: "status-page-" + i, reservation_no: no, user_id: "U-" + i }),
      });
      if (r.status !== 202) fail("POST /v1/reservations answered " + r.status + ": " + (await r.text()));
    };
    await post(tricky, 0);
    for (let i = 1; i < produce; i++) await post("R-status-" + i, i);
    let maxLag = 0, maxRate = 0;
    const deadline = Date.now() + 90000;
    for (;;) {
      const rs = await rows();
      for (const r of rs) { maxLag = Math.max(maxLag, r.lag || 0); maxRate = Math.max(maxRate, r.rate || 0); }
      if (maxLag > 0 && rs.every((r) => r.lag === 0) && maxRate > 0) break;
      if (Date.now() > deadline) fail("lag never rose and fell back to 0 with processed/s above 0 (max lag " + maxLag + ", max processed/s " + maxRate + ", rows " + JSON.stringify(rs) + ")");
      await new Promise((r) => setTimeout(r, 200));
    }
    const scripts = await page.evaluate(() => document.querySelectorAll("script").length);
    await page.fill("#key", tricky);
    await page.click("#lookup button");
    await page.waitForSelector("#lookup-out .lookup-state", { timeout: 15000 }).catch(() => fail("the key lookup showed nothing"));
    const out = await page.$eval("#lookup-out", (e) => e.textContent);
    if (!out.includes('"reservation_no": "' + tricky + '"') || !out.includes('"state": "reserved"')) fail("the key lookup did not show the reservation's state: " + out);
    if (!/partition \d+ of \d+: /.test(out)) fail("the key lookup did not show the partition: " + out);
    if (await page.evaluate(() => document.querySelectorAll("script").length) !== scripts) fail("a reservation number was inserted as markup");
  }
  if (errors.length) fail("console errors: " + errors.join(" | "));
  if (args.screenshot) await page.screenshot({ path: args.screenshot, fullPage: true });
  console.log("status page: ok");
} finally {
  await browser.close();
}
