/*
 * TikTok sandbox pixel: a stand-in for analytics.tiktok.com/i18n/pixel/events.js.
 *
 * It leaves window.ttq as the base code made it (an array queue that tests read back) and
 * only watches it: the entries queued so far are walked once, then ttq.push is wrapped so
 * the stubs' later calls are seen too. Each track/page call is posted to the sandbox that
 * served this script, honouring holdConsent / grantConsent / revokeConsent like the real
 * pixel, and each ready(callback) is called once the script has started, after the calls
 * queued before it, as TikTok's script does. ES5 only, so it runs wherever the base code
 * itself runs.
 */
(function (w, d) {
  "use strict";

  var SCRIPT_PATH = "/i18n/pixel/events.js";
  var ttq = w[w.TiktokAnalyticsObject || "ttq"];
  if (!ttq || typeof ttq.push !== "function") return;

  function ownScript() {
    if (d.currentScript && d.currentScript.src) return d.currentScript;
    var scripts = d.getElementsByTagName("script");
    for (var i = scripts.length - 1; i >= 0; i--) {
      if (scripts[i].src && scripts[i].src.indexOf(SCRIPT_PATH) !== -1) return scripts[i];
    }
    return null;
  }

  var script = ownScript();
  if (!script) return;
  // An anchor resolves the src the same way the browser did, without needing URL().
  var link = d.createElement("a");
  link.href = script.src;
  var origin = link.protocol + "//" + link.host;
  var match = /[?&]sdkid=([^&#]*)/.exec(link.search);
  var pixel = match ? decodeURIComponent(match[1].replace(/\+/g, " ")) : "";

  // ttq.load() for a second pixel inserts this script again: register that pixel with the
  // running copy instead of walking the queue a second time (which would double every call).
  var state = ttq._sandbox;
  if (state) {
    if (pixel && state.pixels.indexOf(pixel) === -1) state.pixels.push(pixel);
    return;
  }
  // Every pixel the page's ttq.load() calls registered (ttq._i), not only this script's own:
  // the first copy to run may walk the queue before the others have loaded, and TikTok's
  // script sends each call to every pixel loaded on the page.
  var pixels = [];
  for (var loaded in ttq._i || {}) {
    if (Object.prototype.hasOwnProperty.call(ttq._i, loaded)) pixels.push(loaded);
  }
  if (pixel && pixels.indexOf(pixel) === -1) pixels.push(pixel);
  state = ttq._sandbox = {
    endpoint: origin + "/sandbox/pixel",
    pixels: pixels,
    held: null, // null: not holding; an array: calls waiting for grantConsent
    revoked: false,
    seen: 0
  };

  function plain(value) {
    return value !== null && typeof value === "object" && !(value instanceof Array) ? value : {};
  }

  function send(method, event, properties, options) {
    for (var i = 0; i < state.pixels.length; i++) {
      var body = JSON.stringify({
        pixel: state.pixels[i],
        method: method,
        event: event,
        properties: plain(properties),
        options: plain(options),
        page_url: w.location.href,
        sent_at: new Date().getTime() / 1000
      });
      // A string body is text/plain: no CORS preflight, and a beacon survives page unload.
      var queued = false;
      try {
        queued = navigator.sendBeacon ? navigator.sendBeacon(state.endpoint, body) : false;
      } catch (error) {
        queued = false;
      }
      if (!queued && w.fetch) {
        w.fetch(state.endpoint, {
          method: "POST",
          mode: "cors",
          credentials: "omit",
          keepalive: true,
          headers: {"Content-Type": "text/plain;charset=UTF-8"},
          body: body
        })["catch"](function () {});
      }
    }
  }

  function deliver(call) {
    if (state.revoked) return;
    if (state.held) {
      state.held.push(call);
      return;
    }
    send(call[0], call[1], call[2], call[3]);
  }

  function handle(entry) {
    if (!(entry instanceof Array) || typeof entry[0] !== "string") return;
    switch (entry[0]) {
      case "holdConsent":
        state.revoked = false;
        if (!state.held) state.held = [];
        break;
      case "grantConsent":
        var held = state.held || [];
        state.held = null;
        state.revoked = false;
        for (var i = 0; i < held.length; i++) deliver(held[i]);
        break;
      case "revokeConsent":
        state.held = null;
        state.revoked = true;
        break;
      case "track":
        if (typeof entry[1] === "string" && entry[1]) {
          deliver(["track", entry[1], entry[2], entry[3]]);
        }
        break;
      case "page":
        deliver(["page", "Pageview", entry[1], entry[2]]);
        break;
      case "ready":
        if (typeof entry[1] === "function") callLater(entry[1]);
        break;
      default:
        // identify, debug, on, ... have nothing to report to the sandbox.
        break;
    }
  }

  function callLater(callback) {
    // As TikTok's script does: never inside the page's own ttq.ready() call, and whether or
    // not consent lets it send yet (the page's callback decides what that means for it).
    w.setTimeout(function () {
      try {
        callback();
      } catch (error) {
        // The page's callback failing is the page's business, not the pixel's.
      }
    }, 0);
  }

  function catchUp() {
    // Walking by index from where we stopped also picks up entries pushed by other means.
    while (state.seen < ttq.length) {
      var entry = ttq[state.seen];
      state.seen += 1;
      try {
        handle(entry);
      } catch (error) {
        // A faulty entry must not stop the page or the entries after it.
      }
    }
  }

  var originalPush = ttq.push;
  ttq.push = function () {
    var length = originalPush.apply(ttq, arguments);
    catchUp();
    return length;
  };
  catchUp();
})(window, document);
