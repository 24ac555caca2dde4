"use strict";
(function () {
  const rows = Array.from(document.querySelectorAll("tr.test"));
  const filter = document.getElementById("filter");
  const shown = document.getElementById("shown");
  const buttons = Array.from(document.querySelectorAll("button.status"));
  const chosen = new Set();
  let texts = null;

  function apply() {
    if (texts === null) texts = rows.map((r) => r.textContent.toLowerCase());
    const words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    let count = 0;
    rows.forEach((row, i) => {
      const ok = (!chosen.size || chosen.has(row.dataset.status)) &&
        words.every((w) => texts[i].includes(w));
      row.hidden = !ok;
      const details = row.nextElementSibling;
      if (!ok && details) details.hidden = true;
      else if (ok && details && row.classList.contains("open")) details.hidden = false;
      if (ok) count += 1;
    });
    shown.textContent = count + " shown";
  }
  filter.addEventListener("input", apply);
  buttons.forEach((b) => b.addEventListener("click", () => {
    const s = b.dataset.status;
    if (chosen.has(s)) chosen.delete(s); else chosen.add(s);
    b.setAttribute("aria-pressed", chosen.has(s) ? "true" : "false");
    apply();
  }));

  function esc(text) {
    return String(text).replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));
  }
  function secs(ms) { return (ms / 1000).toFixed(3) + " s"; }

  function draw(box) {
    if (box.dataset.drawn) return;
    const source = box.parentNode.querySelector('script.timeline-data[data-uid="' + box.dataset.uid + '"]');
    const data = JSON.parse(source.textContent);
    const span = data.span || 1;
    const pct = (ms) => (100 * ms / span).toFixed(3) + "%";
    const width = (s, e) => (100 * Math.max(e - s, 0) / span).toFixed(3) + "%";
    const lanes = data.lanes.map(() => []);
    const name = (i) => (i >= 0 && data.lanes[i] ? data.lanes[i].name : "?");
    data.lanes.forEach((lane, i) => {
      (lane.runs || []).forEach(([s, e]) => lanes[i].push(
        '<div class="span run" style="left:' + pct(s) + ";width:" + width(s, e) +
        '" title="' + esc(lane.name + ": worker running " + secs(s) + " to " + secs(e)) + '"></div>'));
      lane.phases.forEach(([phase, s, e]) => lanes[i].push(
        '<div class="span phase ' + esc(phase) + '" style="left:' + pct(s) + ";width:" + width(s, e) +
        '" title="' + esc(lane.name + ": " + phase + " " + secs(s) + " to " + secs(e)) + '"></div>'));
    });
    data.rendezvous.forEach(([kind, rname, gen, release, outcome, arrivals, last, by, reason]) => {
      arrivals.forEach(([lane, at]) => {
        let cls = "span " + kind;
        if (outcome !== "done") cls += " " + outcome;
        if (lane === last && arrivals.length > 1) cls += " last";
        const title = kind + " " + rname + " #" + gen + ": " + name(lane) + " arrived " + secs(at) +
          ", released " + secs(release) + " (" + (release - at) + " ms)" +
          (outcome === "done" ? "; last: " + name(last) : "; " + outcome + (by ? " by " + by : "") +
            (reason ? ": " + reason : ""));
        lanes[lane].push('<div class="' + cls + '" data-name="' + esc(rname) + '" data-outcome="' + outcome +
          '" style="left:' + pct(at) + ";width:" + width(at, release) + '" title="' + esc(title) + '"></div>');
      });
    });
    data.waits.forEach(([lane, s, e, wname, outcome]) => lanes[lane].push(
      '<div class="span wait" style="left:' + pct(s) + ";width:" + width(s, e) + '" title="' +
      esc("wait " + wname + ": " + secs(s) + " to " + secs(e) + " (" + outcome + ")") + '"></div>'));
    data.locks.forEach(([lane, s, e, lname]) => lanes[lane].push(
      '<div class="span lock" style="left:' + pct(s) + ";width:" + width(s, e) + '" title="' +
      esc("lock " + lname + " held " + secs(s) + " to " + secs(e)) + '"></div>'));
    (data.migrations || []).forEach(([lane, s, e, text, status]) => lanes[lane].push(
      '<div class="span migration ' + (status === "completed" ? "" : "failed") + '" style="left:' +
      pct(s) + ";width:" + width(s, e) + '" title="' + esc(text) + '"></div>'));
    data.marks.forEach(([lane, t, kind, text]) => {
      const target = lane >= 0 ? lane : 0;
      lanes[target].push('<div class="mark ' + kind + '" data-by="' + esc(lane >= 0 ? name(lane) : "") +
        '" style="left:' + pct(t) + '" title="' + esc(secs(t) + ": " + text) + '"></div>');
    });
    const ticks = [];
    const step = Math.pow(10, Math.floor(Math.log10(span / 5)));
    const every = [1, 2, 5, 10].map((m) => m * step).find((s) => span / s <= 10) || step * 10;
    for (let t = 0; t <= span; t += every) {
      ticks.push('<div class="tick" style="left:' + pct(t) + '">' + (t / 1000).toFixed(every < 1000 ? 2 : 0) + " s</div>");
    }
    const html = ['<div class="axis">' + ticks.join("") + "</div>"];
    data.lanes.forEach((lane, i) => {
      html.push('<div class="lane ' + esc(lane.status) + '" data-worker="' + esc(lane.name) + '">' +
        '<div class="label" title="' + esc(lane.name + " on " + lane.host + ": " + lane.status +
          (lane.reason ? ": " + lane.reason : "")) + '"><b>' + esc(lane.name) + "</b> " +
          '<span class="status ' + esc(lane.status) + '">' + esc(lane.status) + "</span> " + esc(lane.host) +
          (lane.reason ? '<span class="reason">' + esc(lane.reason) + "</span>" : "") + "</div>" +
        '<div class="track">' + lanes[i].join("") + "</div></div>");
    });
    html.push('<div class="legend"><i class="phase setUp" style="background:#90caf9"></i>setUp' +
      '<i style="background:#a5d6a7"></i>test<i style="background:#ce93d8"></i>tearDown' +
      '<i style="background:#fbc02d"></i>barrier (arrival to release)<i style="background:#e65100"></i>came last' +
      '<i style="background:#26a69a"></i>exchange<i style="background:#5c6bc0"></i>wait' +
      '<i style="background:#8d6e63"></i>lock held<i style="background:#1565c0"></i>post' +
      '<i style="background:#c62828"></i>abort, timeout<i style="background:#00838f"></i>migration</div>');
    if (data.dropped) html.push('<p class="note">' + data.dropped + " sync events were not recorded (over the limit)</p>");
    box.innerHTML = html.join("");
    box.dataset.drawn = "1";
  }

  function toggle(row, open) {
    const details = row.nextElementSibling;
    const now = open === undefined ? details.hidden : open;
    details.hidden = !now;
    row.classList.toggle("open", now);
    if (now) details.querySelectorAll(".timeline").forEach(draw);
  }
  document.getElementById("tests").addEventListener("click", (event) => {
    const row = event.target.closest("tr.test");
    if (row && !event.target.closest("a")) toggle(row);
  });
  document.getElementById("tests").addEventListener("keydown", (event) => {
    const row = event.target.closest("tr.test");
    if (row && (event.key === "Enter" || event.key === " ")) { event.preventDefault(); toggle(row); }
  });
  // Multi-host tests open with their timelines: all of them when there are few, else those
  // that did not pass; and the test the address names (#t12).
  const multi = rows.filter((r) => r.nextElementSibling.querySelector(".timeline"));
  const failed = new Set(["FAIL", "ERROR", "INTERRUPT"]);
  (multi.length <= 10 ? multi : multi.filter((r) => failed.has(r.dataset.status)).slice(0, 10))
    .forEach((r) => toggle(r, true));
  const named = location.hash && document.getElementById(location.hash.slice(1));
  if (named && named.classList.contains("test")) { toggle(named, true); named.scrollIntoView(); }
  document.body.dataset.rendered = performance.now().toFixed(1);
})();
