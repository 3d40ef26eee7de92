// Firefox for the browser suite: Debian's firefox-esr driven by puppeteer-core over WebDriver
// BiDi (Playwright's own Firefox build cannot be downloaded here), with Firefox's fake media
// devices. `openFirefoxPage` returns a page with the few Playwright methods the suite's flows
// use (goto, fill, click, waitForFunction, waitForSelector, textContent, isVisible, evaluate), so
// one flow drives a Chromium page and a Firefox page alike, and mixed calls are the same code.
//
// Firefox gathers ICE candidates only on the interface of the default route unless the page
// holds a granted permission, and a loopback-only network namespace has none: run.sh gives the
// namespace a veth pair and a default route (all inside it, nothing leaves).
import { once } from 'node:events';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import puppeteer from 'puppeteer-core';
import { INSECURE_HOST, LOCAL_HOST } from './lib.mjs';

export const FIREFOX = process.env.FIREFOX_BIN || '/usr/bin/firefox-esr';

/** The Firefox preferences a headless call needs, and the host names the suite maps to loopback. */
const PREFS = {
  // Fake camera and microphone, no permission prompt.
  'media.navigator.streams.fake': true,
  'media.navigator.permission.disabled': true,
  // Candidates on loopback, with their real addresses (no mDNS names nobody here resolves).
  'media.peerconnection.ice.loopback': true,
  'media.peerconnection.ice.obfuscate_host_addresses': false,
  // Autoplay of the remote audio without a gesture, as the Chromium flags allow.
  'media.autoplay.default': 0,
  'media.autoplay.blocking_policy': 0,
  // Every page of the suite is a tab, and all but one are in the background: no throttled timers
  // and no media held back until the tab comes to the front (a phone shows its one page).
  'media.block-autoplay-until-in-foreground': false,
  'dom.timeout.enable_budget_throttling': false,
  'dom.min_background_timeout_value': 4,
  'dom.min_background_timeout_value_without_budget_throttling': 4,
  // The insecure host name and the machine's .local name resolve to loopback, as Chromium's
  // --host-resolver-rules make them.
  'network.dns.localDomains': `${INSECURE_HOST},${LOCAL_HOST}`,
  // Nothing of Firefox's own reaches for the network.
  'app.update.auto': false,
  'browser.shell.checkDefaultBrowser': false,
  'datareporting.policy.dataSubmissionEnabled': false,
  'network.captive-portal-service.enabled': false,
  'network.connectivity-service.enabled': false,
};

/**
 * Launches headless Firefox. options.trustCa: a CA certificate file the profile's own NSS
 * database trusts for websites (Firefox does not read the system's or ~/.pki's store).
 */
export async function launchFirefox({ trustCa = null } = {}) {
  if (!existsSync(FIREFOX)) {
    throw new Error(`${FIREFOX} is missing: install Debian's firefox-esr (run.sh does)`);
  }
  const profile = mkdtempSync(join(tmpdir(), 'intercomd-firefox-'));
  if (trustCa) {
    try {
      execFileSync('certutil', ['-d', `sql:${profile}`, '-N', '--empty-password'], { stdio: 'pipe' });
      execFileSync('certutil', ['-d', `sql:${profile}`, '-A', '-n', 'intercomd', '-t', 'C,,', '-i', trustCa], { stdio: 'pipe' });
    } catch (e) {
      throw new Error(`certutil could not make Firefox's profile trust ${trustCa}: ${e.stderr || e.message}`);
    }
  }
  const browser = await puppeteer.launch({
    browser: 'firefox',
    executablePath: FIREFOX,
    headless: !process.env.HEADFUL,
    userDataDir: profile,
    extraPrefsFirefox: PREFS,
    protocolTimeout: 60_000,
    timeout: 60_000,
  });
  const close = browser.close.bind(browser);
  const firefox = browser.process();
  browser.close = async () => {
    try {
      await close();
      // close() can return while Firefox still writes its profile on the way out: wait for the
      // process itself, and let rmSync retry what its helper processes write last (ENOTEMPTY).
      if (firefox && firefox.exitCode === null && firefox.signalCode === null) await once(firefox, 'exit');
    } finally {
      rmSync(profile, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
    }
  };
  return browser;
}

/**
 * A page in a browser context of its own (its own storage, so a token of its own), registered
 * in `pages` under `name`, its console and uncaught errors collected in `logs`, with the
 * Playwright-shaped methods the suite uses.
 */
export async function openFirefoxPage(browser, name, pages, logs, { viewport = { width: 1024, height: 700 } } = {}) {
  const context = await browser.createBrowserContext();
  const page = await context.newPage();
  await page.setViewport(viewport);
  page.on('console', (m) => logs.push(`${name} console.${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => logs.push(`${name} PAGE ERROR: ${e.message}`));
  const adapted = new FirefoxPage(page, context);
  pages[name] = adapted;
  return adapted;
}

/** Playwright's page methods that the suite uses, over a puppeteer page. */
class FirefoxPage {
  constructor(page, context) {
    this.page = page;
    this.context = context;
    this.engine = 'firefox';
  }

  goto(url, { timeout = 30_000 } = {}) {
    return this.page.goto(url, { timeout, waitUntil: 'load' });
  }

  url() {
    return this.page.url();
  }

  /** Replaces the field's value as a user would, with input events. */
  async fill(selector, text) {
    await this.page.bringToFront();
    await this.page.waitForSelector(selector, { timeout: 10_000 });
    await this.page.$eval(selector, (el) => { el.focus(); el.select(); });
    await this.page.keyboard.press('Backspace');
    await this.page.type(selector, text);
  }

  // Input goes to the tab in front, as a person taps the phone they hold: Firefox dispatches a
  // click on the next animation frame, which a background tab gets about once a second.
  async click(selector) {
    await this.page.bringToFront();
    await this.page.waitForSelector(selector, { visible: true, timeout: 10_000 });
    await this.page.click(selector);
  }

  /** As Playwright's: (fn, arg, { timeout }). */
  waitForFunction(fn, arg, { timeout = 30_000 } = {}) {
    return this.page.waitForFunction(fn, { timeout, polling: 100 }, arg);
  }

  waitForSelector(selector, { timeout = 30_000 } = {}) {
    return this.page.waitForSelector(selector, { timeout });
  }

  textContent(selector) {
    return this.page.$eval(selector, (el) => el.textContent);
  }

  isVisible(selector) {
    return this.page.evaluate((s) => {
      const el = document.querySelector(s);
      return !!el && el.checkVisibility();
    }, selector);
  }

  evaluate(fn, arg) {
    return this.page.evaluate(fn, arg);
  }

  waitForTimeout(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  close() {
    return this.context.close();
  }
}

/** The namespace has a route Firefox can gather candidates on (see the top of this file). */
export function hasDefaultRoute() {
  try {
    return /default/.test(execFileSync('ip', ['route'], { encoding: 'utf8' }));
  } catch {
    return false;
  }
}
