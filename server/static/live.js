// The server's landing page (GET /): one episode of a chosen task and baseline, played live against
// this server's own endpoints and drawn with the timeline page of `inferencegym render`
// (gymjax/data/timeline.html, whose draw()/show() this script feeds). Each step: POST /baseline/action
// (what the baseline does now), POST /step with that action, append the reply to the timeline, redraw.
// Query string: ?task=T&policy=P&seed=S&speed=MS&autoplay=1 preselect (and start) an episode.
function live() {
  const q = new URLSearchParams(location.search);
  const bar = document.createElement("div");
  bar.className = "live-controls";
  bar.style.cssText = "padding:6px 0;font-size:13px;border-bottom:1px solid #ddd";
  bar.innerHTML = `task <select id="live-task"></select> baseline <select id="live-policy"></select>
    seed <input id="live-seed" type="number" min="0" value="${Number(q.get("seed") || 0)}" style="width:90px">
    step every <select id="live-speed"><option value="0">0</option><option value="50">50</option>
    <option value="150" selected>150</option><option value="500">500</option></select> ms
    <button id="live-start">start</button><button id="live-pause" disabled>pause</button>
    <span id="live-status" style="font-size:12px;color:#555"></span>`;
  document.querySelector(".controls").before(bar);
  document.getElementById("play").style.display = "none";  // the live run has its own start/pause
  const $ = id => document.getElementById(id);
  const status = text => { $("live-status").textContent = text; };
  if (q.get("speed") !== null) $("live-speed").value = q.get("speed");
  let catalogue = null, sid = null, run = 0, paused = false, resume = null;

  async function api(path, body) {
    const init = body === undefined ? {} : {method: "POST", headers: {"content-type": "application/json"}, body: JSON.stringify(body)};
    const r = await fetch(path, init);
    const reply = await r.json();
    if (!r.ok) throw new Error(`${path}: ${r.status} ${JSON.stringify(reply.detail)}`);
    return reply;
  }
  function closeSession() {  // resolves once the server has freed the session
    const id = sid; sid = null;
    return id === null ? Promise.resolve() : api("/close", {session_id: id}).catch(() => {});
  }
  addEventListener("pagehide", () => {
    if (sid !== null) navigator.sendBeacon("/close", new Blob([JSON.stringify({session_id: sid})], {type: "application/json"}));
  });

  // an empty timeline of the task (what `inferencegym render` records, filled one step at a time)
  function skeleton(entry) {
    const series = {};
    PANELS.forEach(([, , lines]) => lines.forEach(([key]) => { series[key] = []; }));
    ["reconfig_remaining_s", "invalid_config", "goodput_rps"].forEach(k => { series[k] = []; });
    return {task: entry.name, steps: entry.horizon_steps, dt_s: entry.dt_s, tenants: entry.tenants.map(t => t.name),
            slo_ttft_s: entry.tenants.map(t => t.slo_ttft_s), slo_tpot_s: entry.tenants.map(t => t.slo_tpot_s),
            knob_levels: entry.knob_levels, series, score: null};
  }
  function record(reply) {
    const o = reply.observation, s = TL.series;
    for (const key in s) {
      if (key.startsWith("knob.")) s[key].push(Number(o.action_in_force[key.slice(5)].toPrecision(7)));  // float32 as written
      else if (key === "reward") s[key].push(reply.reward);
      else if (key === "goodput_tps") s[key].push(o.goodput_rps * 100);
      else s[key].push(o[key]);
    }
  }

  async function start() {
    const mine = ++run;  // a newer start ends this run
    closeSession();
    paused = false; $("live-pause").textContent = "pause"; $("live-pause").disabled = false;
    const task = $("live-task").value, policy = $("live-policy").value, seed = Math.max(0, Math.floor(Number($("live-seed").value) || 0));
    const entry = catalogue.tasks.find(t => t.name === task);
    TL = skeleton(entry); draw(); show(0);
    document.title = `${task} / ${policy}: live episode`;
    document.querySelector("h1").textContent = `${task}: a live episode of the ${policy} baseline (seed ${seed})`;
    document.querySelector(".sub").textContent = `played against this server: POST /reset, then per step POST /baseline/action and POST /step; ` +
      `grey: engine reloading, draining or unable to serve`;
    try {
      status("resetting (a task's first episode waits for its compilation)...");
      const reset = await api("/reset", {task, seed});
      sid = reset.session_id; window.liveSessionId = sid;
      let done = false;
      while (!done && mine === run) {
        if (paused) { await new Promise(r => { resume = r; }); continue; }
        const act = await api("/baseline/action", {session_id: sid, policy});
        const reply = await api("/step", {session_id: sid, action: act.action});
        if (mine !== run) return;
        record(reply); draw(); show(TL.series.reward.length);
        done = reply.done;
        status(`session ${sid.slice(0, 8)}: step ${reply.observation.step} of ${reply.observation.horizon_steps}` +
               (done ? `, done: episode score ${reply.observation.score.toFixed(3)}` : ""));
        const wait = Number($("live-speed").value);
        if (!done && wait > 0) await new Promise(r => setTimeout(r, wait));
      }
      if (mine === run) { await closeSession(); $("live-pause").disabled = true; window.liveDone = true; }
    } catch (e) {
      if (mine === run) { status(`error: ${e.message}`); closeSession(); $("live-pause").disabled = true; }
    }
  }

  $("live-start").addEventListener("click", start);
  $("live-pause").addEventListener("click", () => {
    paused = !paused; $("live-pause").textContent = paused ? "resume" : "pause";
    if (!paused && resume) { resume(); resume = null; }
  });
  TL = {steps: 1, series: {reward: [], reconfig_remaining_s: [], invalid_config: []}}; show(0);
  api("/tasks").then(cat => {
    catalogue = cat;
    cat.tasks.forEach(t => $("live-task").add(new Option(`${t.name} (${t.horizon_steps} steps)`, t.name)));
    cat.baselines.forEach(p => $("live-policy").add(new Option(p, p)));
    if (q.get("task")) $("live-task").value = q.get("task");
    $("live-policy").value = q.get("policy") || "heuristic";
    status(`${cat.tasks.length} tasks served; choose one and press start`);
    if (q.get("autoplay") === "1") start();
  }).catch(e => status(`error: ${e.message}`));
}
