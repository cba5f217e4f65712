// Drives the `dgpt serve` page in headless Chromium (playwright-core, Debian's browser) and
// prints what it saw as one JSON line; check_web.py judges it against the server's API.
// Usage: node page_in_chromium.js '{"url", "chromium", "userDataDir", "screenshot", "prompt",
//                                   "maxTokens", "temperature", "seed"}'
"use strict";
const { chromium } = require("playwright-core");

const CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
  "--no-first-run", "--disable-background-networking", "--disable-component-update",
  "--disable-sync"];

async function main() {
  const settings = JSON.parse(process.argv[2]);
  const result = { consoleErrors: [] };
  // A persistent context is how playwright takes a --user-data-dir: a fresh, throwaway profile.
  const context = await chromium.launchPersistentContext(settings.userDataDir, {
    executablePath: settings.chromium,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1100, height: 900 },
  });
  try {
    const page = context.pages()[0] || await context.newPage();
    page.setDefaultTimeout(60000);
    page.on("console", (message) => {
      if (message.type() === "error") result.consoleErrors.push(message.text());
    });
    page.on("pageerror", (error) => result.consoleErrors.push(String(error)));

    await page.goto(settings.url);
    await page.waitForFunction(() => !/loading/.test(document.getElementById("model").textContent));
    result.modelShown = await page.textContent("#model");

    // Count the text pieces #output grows by, to see the text arrive in steps, not at once,
    // and note whether Stop was usable when the first text showed (a tiny model is done fast).
    await page.evaluate(() => {
      window.outputGrowths = 0;
      window.stopEnabledAtFirstText = null;
      const output = document.getElementById("output");
      new MutationObserver((mutations) => {
        window.outputGrowths += mutations.filter((m) => m.addedNodes.length > 0).length;
        if (window.stopEnabledAtFirstText === null && output.textContent.length > 0) {
          window.stopEnabledAtFirstText = !document.getElementById("stop").disabled;
        }
      }).observe(output, { childList: true });
    });
    await page.fill("#prompt", settings.prompt);
    await page.fill("#max-tokens", String(settings.maxTokens));
    await page.fill("#temperature", String(settings.temperature));
    await page.fill("#seed", String(settings.seed));
    const completionRequest = page.waitForRequest("**/v1/completions");
    await page.click("#generate");
    result.requestBody = JSON.parse((await completionRequest).postData());
    await page.waitForFunction(() => !document.getElementById("generate").disabled);
    result.output = await page.evaluate(() => document.getElementById("output").textContent);
    result.outputGrowths = await page.evaluate(() => window.outputGrowths);
    result.stopEnabledWhileRunning = await page.evaluate(() => window.stopEnabledAtFirstText);
    result.stopEnabledAfterRun = await page.isEnabled("#stop");
    result.stats = await page.textContent("#stats");
    result.errorAfterRun = await page.evaluate(() => {
      const error = document.getElementById("error");
      return error.hidden ? null : error.textContent;
    });
    // /health is polled every few seconds; the first answer fills the table.
    await page.waitForSelector("#stages tbody tr.stage", { timeout: 15000 });
    result.stageRows = await page.$$eval("#stages tbody tr.stage",
      (rows) => rows.map((row) => Array.from(row.cells, (cell) => cell.textContent)));
    await page.screenshot({ path: settings.screenshot, fullPage: true });

    // Stop as soon as the first text shows: the page must go back to idle with no error.
    await page.fill("#max-tokens", String(settings.longMaxTokens));
    result.stopClickedWhileRunning = await page.evaluate(() => new Promise((resolve) => {
      const output = document.getElementById("output");
      const stop = document.getElementById("stop");
      const observer = new MutationObserver(() => {
        if (output.textContent.length === 0) return;  // the clearing at the start of a run
        observer.disconnect();
        resolve(!stop.disabled);
        stop.click();
      });
      observer.observe(output, { childList: true });
      document.getElementById("generate").click();
    }));
    await page.waitForFunction(() => !document.getElementById("generate").disabled);
    result.outputAfterStop = await page.evaluate(() => document.getElementById("output").textContent);
    result.errorAfterStop = await page.evaluate(() => {
      const error = document.getElementById("error");
      return error.hidden ? null : error.textContent;
    });
    result.statsAfterStop = await page.textContent("#stats");

    // A request the server refuses: its OpenAI-style message appears in #error.
    await page.fill("#max-tokens", String(settings.maxTokens));
    await page.fill("#temperature", "-1");
    await page.click("#generate");
    await page.waitForSelector("#error:not([hidden])");
    result.errorShown = await page.textContent("#error");
    await page.screenshot({ path: settings.screenshot.replace(/\.png$/, "-error.png"), fullPage: true });
  } finally {
    await context.close();
  }
  console.log(JSON.stringify(result));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
