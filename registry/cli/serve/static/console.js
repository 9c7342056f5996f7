// The promptreg console's script. The server builds every page (console.py); this adds what needs a
// script: signing in and out, label moves, move requests of protected labels and their decisions
// through the API (session cookie + X-Promptreg-Console header), and live updates: it follows /api/v1/events from the revision the page was built at and,
// on a change that concerns the page, fetches the same page again and swaps its [data-live] sections.
// Plain JavaScript, no framework, no build step; text always goes in as text (textContent), never HTML.
"use strict";

(() => {
  const body = document.body;
  const page = body.dataset.page;
  const promptName = body.dataset.prompt;
  const $ = (selector, root = document) => root.querySelector(selector);
  const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

  function el(tag, className, ...children) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    node.append(...children.filter((child) => child !== null && child !== undefined));
    return node;
  }

  // -- messages ------------------------------------------------------------------------------------

  function showError(text, action) {
    const box = $("#messages");
    box.replaceChildren(el("p", "error", text, action ? " " : null, action));
  }

  function clearError() {
    $("#messages").replaceChildren();
  }

  function reloadButton() {
    const button = el("button", "link", "Reload the page");
    button.type = "button";
    button.addEventListener("click", () => location.reload());
    return button;
  }

  function notice(text) {
    const box = $("#notices");
    const item = el("p", "notice", text);
    box.prepend(item);
    while (box.children.length > 3) box.lastElementChild.remove();
    setTimeout(() => item.remove(), 20000);
  }

  // -- the API -------------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, type, message, detail) {
      super(message);
      this.status = status;
      this.type = type;
      this.detail = detail || {};
    }
  }

  async function call(method, path, data) {
    const headers = { Accept: "application/json" };
    if (method !== "GET") headers["X-Promptreg-Console"] = "1";
    if (data !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(path, { method, headers, body: data === undefined ? undefined : JSON.stringify(data) });
    } catch (error) {
      throw new ApiError(0, "NetworkError", `the server did not answer (${error.message})`);
    }
    const answer = await response.json().catch(() => null);
    if (!response.ok) {
      const error = (answer && answer.error) || {};
      throw new ApiError(response.status, error.type || "HTTPError", error.message || `HTTP ${response.status}`, error);
    }
    return answer;
  }

  function promptPath(...parts) {
    return "/api/v1/prompts/" + parts.map(encodeURIComponent).join("/");
  }

  function explain(error) {
    if (error.status === 401) return `${error.message}: reload the page to sign in again.`;
    return `${error.type}: ${error.message}`;
  }

  // -- sign-in -------------------------------------------------------------------------------------

  const signIn = $("#sign-in");
  if (signIn) {
    signIn.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearError();
      try {
        await call("POST", "/api/v1/session", { token: $("#token").value.trim() });
        location.reload();
      } catch (error) {
        showError(`${error.type}: ${error.message}`);
        $("#token").select();
      }
    });
  }

  const signOut = $("#sign-out");
  if (signOut) {
    signOut.addEventListener("click", async () => {
      try {
        await call("DELETE", "/api/v1/session");
        location.assign("/");
      } catch (error) {
        showError(explain(error));
      }
    });
  }

  // -- swapping sections with the page fetched anew ------------------------------------------------

  async function fetchPage(url) {
    const response = await fetch(url, { headers: { Accept: "text/html" } });
    const doc = new DOMParser().parseFromString(await response.text(), "text/html");
    if (response.status === 401) {
      throw new ApiError(401, "AuthenticationRequiredError", "you are signed out");
    }
    if (!response.ok) {
      const message = $("#messages .error", doc);
      throw new ApiError(response.status, "Error", message ? message.textContent : `HTTP ${response.status}`);
    }
    return doc;
  }

  // Where the focus was, as a selector that finds the same control in the swapped-in section.
  function focusKey(node, section) {
    if (node.id) return `#${CSS.escape(node.id)}`;
    const tag = node.tagName.toLowerCase();
    const request = node.closest("tr[data-request]");
    if (request) {
      const action = node.dataset.action ? `[data-action="${CSS.escape(node.dataset.action)}"]` : "";
      return `#${section.id} tr[data-request="${CSS.escape(request.dataset.request)}"] ${tag}${action}`;
    }
    const row = node.closest("tr[data-label]");
    if (row) return `#${section.id} tr[data-label="${CSS.escape(row.dataset.label)}"] ${tag}`;
    const href = node.getAttribute("href");
    return href ? `#${section.id} a[href="${CSS.escape(href)}"]` : `#${section.id} h2`;
  }

  function syncOptions(list, fresh) {
    const value = list.value;
    list.replaceChildren(...Array.from(fresh.children, (option) => document.importNode(option, true)));
    if (value !== undefined && Array.from(list.options || []).some((option) => option.value === value)) {
      list.value = value;
    }
  }

  async function swap(url, ids) {
    const doc = await fetchPage(url);
    const active = document.activeElement;
    let refocus = null;
    for (const id of ids) {
      const old = document.getElementById(id);
      const fresh = doc.getElementById(id);
      if (!old || !fresh) continue;
      if (old.contains(active) && active !== old) refocus = focusKey(active, old);
      old.replaceWith(document.importNode(fresh, true));
    }
    for (const list of $$("[data-live-options]")) {
      const fresh = doc.getElementById(list.id);
      if (fresh) syncOptions(list, fresh);
    }
    const target = refocus && $(refocus);
    if (target) {
      if (target.tagName === "H2") target.tabIndex = -1; // focusable by script only
      target.focus();
    }
    afterSwap();
  }

  // One refresh at a time; changes arriving meanwhile are read by one more, however many they are.
  let refreshing = null;
  const pending = new Set();

  function refresh(...extra) {
    for (const id of [...$$("[data-live]").map((node) => node.id), ...extra]) pending.add(id);
    if (refreshing) return refreshing;
    refreshing = (async () => {
      while (pending.size) {
        const ids = [...pending];
        pending.clear();
        await swap(location.href, ids);
      }
    })()
      .catch((error) => showError(explain(error)))
      .finally(() => {
        refreshing = null;
      });
    return refreshing;
  }

  const afterSwapHooks = [];
  function afterSwap() {
    for (const hook of afterSwapHooks) hook();
  }

  // -- live updates --------------------------------------------------------------------------------

  const GOVERNANCE = new Set(["protect_label", "unprotect_label", "request_move", "approve_request", "reject_request"]);

  function describe(event) {
    const from = event.previous_version == null ? "unset" : event.previous_version;
    const n = event.approvals;
    const what =
      {
        set_label: `${event.label} moved ${from} → ${event.version}${event.request ? " (an approved request)" : ""}`,
        rollback: `${event.label} rolled back ${from} → ${event.version}`,
        delete_label: `${event.label} deleted (it was at ${from})`,
        add_version: `version ${event.version} added`,
        create_prompt: "prompt created",
        set_compatibility: `compatibility set to ${event.compatibility}`,
        protect_label: `${event.label} protected (${n} approval${n === 1 ? "" : "s"})`,
        unprotect_label: `${event.label} no longer protected`,
        request_move: `move of ${event.label} ${from} → ${event.version} requested`,
        approve_request: `request to move ${event.label} to ${event.version} approved`,
        reject_request: `request to move ${event.label} to ${event.version} rejected`,
      }[event.action] || event.action;
    const by = event.author ? ` by ${event.author}` : "";
    return (page === "prompt" ? "" : `${event.prompt}: `) + what + by + (event.forced ? " (forced)" : "");
  }

  // Whether a change concerns this page: any on the list, its prompt's on a prompt's page, and the
  // requests and what they moved on the requests page.
  function concerns(event) {
    if (page === "list") return true;
    if (page === "requests") return GOVERNANCE.has(event.action) || Boolean(event.request);
    return event.prompt === promptName;
  }

  function setLive(state, text) {
    const live = $("#live");
    live.hidden = false;
    live.className = `live ${state}`;
    live.textContent = text;
  }

  function follow() {
    if (!window.EventSource || !["list", "prompt", "requests"].includes(page)) return;
    const source = new EventSource(`/api/v1/events?after=${encodeURIComponent(body.dataset.rev || "0")}`);
    source.addEventListener("open", () => setLive("on", "live"));
    source.addEventListener("change", (message) => {
      const event = JSON.parse(message.data);
      if (concerns(event)) {
        notice(describe(event));
        refresh();
      }
    });
    source.addEventListener("resync", () => {
      notice("the registry changed more than the stream can replay: everything was read again");
      refresh("version", "diff-result");
    });
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) {
        setLive("off", "not live");
        showError("Live updates stopped (signed out, or the server went away).", reloadButton());
      } else {
        setLive("off", "reconnecting…");
      }
    });
  }

  // -- the prompt list: instant filter --------------------------------------------------------------

  const search = $("#q");
  if (search && page === "list") {
    const filter = () => {
      const text = search.value.trim().toLowerCase();
      const rows = $$("#prompt-list tbody tr[data-search]");
      let shown = 0;
      for (const row of rows) {
        row.hidden = !row.dataset.search.includes(text);
        if (!row.hidden) shown += 1;
      }
      $("#filter-empty").hidden = shown > 0 || rows.length === 0;
    };
    search.addEventListener("input", filter);
    afterSwapHooks.push(filter);
    filter();
  }

  // -- the prompt page: versions and diffs without leaving the page --------------------------------

  async function showVersion(url, push) {
    try {
      await swap(url, ["version"]);
      if (push) history.pushState(null, "", url);
      const shown = new URL(url, location.href).searchParams.get("v");
      for (const row of $$("#versions tbody tr")) {
        const link = $("a", row);
        const current = link && new URL(link.href).searchParams.get("v") === shown;
        if (current) row.setAttribute("aria-current", "true");
        else row.removeAttribute("aria-current");
      }
      const title = $("#version-title");
      if (push && title) {
        title.tabIndex = -1;
        title.focus();
      }
    } catch (error) {
      showError(explain(error));
    }
  }

  if (page === "prompt") {
    document.addEventListener("click", (event) => {
      const link = event.target.closest("#versions a, #labels a");
      if (!link || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
      event.preventDefault();
      showVersion(link.href, true);
    });
    window.addEventListener("popstate", () => showVersion(location.href, false));
    const diffForm = $("#diff-form");
    if (diffForm) {
      diffForm.addEventListener("submit", async (event) => {
        event.preventDefault();
        clearError();
        const url = new URL(location.href);
        url.searchParams.set("from", $("#diff-from").value);
        url.searchParams.set("to", $("#diff-to").value);
        try {
          await swap(url.href, ["diff-result"]);
          history.replaceState(null, "", url.href);
        } catch (error) {
          showError(explain(error));
        }
      });
    }
  }

  // -- promote and roll back -------------------------------------------------------------------------

  function fleetText(fleet) {
    if (!fleet) return "";
    if (!fleet.clients) return "no reporting clients";
    const took = fleet.elapsed < 1 ? `${Math.round(fleet.elapsed * 1000)} ms` : `${fleet.elapsed.toFixed(1)} s`;
    const behind = fleet.lagging.length ? `; ${fleet.lagging.length} still behind` : "";
    return `reached ${fleet.reached.length} of ${fleet.clients} clients in ${took}${behind}`;
  }

  function setupMove() {
    const form = $("#move-form");
    if (!form) return;
    const label = $("#move-label");
    const version = $("#move-version");
    const reason = $("#move-reason");
    const force = $("#move-force");
    const forceRow = $("#move-force-row");
    const confirm = $("#move-confirm");
    const check = $("#move-check");
    const result = $("#move-result");
    let plan = null; // what the preview checked: {mode, label, version, expect, report, sending}

    function shownVersion(name) {
      const row = $(`#labels tr[data-label="${CSS.escape(name)}"]`);
      return row ? Number(row.dataset.version) : 0;
    }

    // A protected label is never moved from here: the preview says so and offers the request instead.
    function refuseProtected(name) {
      reset();
      const request = el("button", "link", "Request the move instead");
      request.type = "button";
      request.addEventListener("click", () => openRequest(name));
      const n = protectedApprovals(name);
      check.className = "check refused";
      check.replaceChildren(
        el("p", "plan", `${name} is protected (${n} approval${n === 1 ? "" : "s"}): it cannot be moved directly.`),
        el("p", "verdict", "It moves when other identities approve a request. ", request),
      );
      check.hidden = false;
    }

    function reset(text) {
      plan = null;
      confirm.disabled = true;
      force.checked = false;
      forceRow.hidden = true;
      check.hidden = !text;
      check.className = "check";
      check.replaceChildren(text ? el("p", null, text) : "");
    }

    function inputs(report) {
      const parts = [];
      if (report.added.length) parts.push(`adds ${report.added.join(", ")}`);
      if (report.removed.length) parts.push(`removes ${report.removed.join(", ")}`);
      if (report.type_change) parts.push(`changes the type ${report.type_change[0]} → ${report.type_change[1]}`);
      if (report.kind_changes.length) parts.push(`changes how ${report.kind_changes.join(", ")} are passed`);
      return parts.join("; ");
    }

    function render(p) {
      const { report } = p;
      const from = p.expect || "unset";
      const title =
        p.mode === "rollback"
          ? `Roll back ${p.label}: ${from} → ${p.version} (where it pointed before its last move)`
          : `Move ${p.label}: ${from} → ${p.version}`;
      const changes = inputs(report);
      let verdict;
      if (report.compatible) {
        verdict = report.current_version == null
          ? "Compatible: the label's first assignment is not checked."
          : `Compatible with the prompt's ${report.mode} mode${changes ? ` (it ${changes})` : ""}.`;
      } else {
        verdict = `Refused by the prompt's ${report.mode} compatibility: the move ${changes}. Confirm stays disabled unless you force it.`;
      }
      const lines = [el("p", "plan", title), el("p", "verdict", verdict)];
      if (p.expect && report.current_version !== p.expect) {
        lines.push(el("p", "warning", `The registry has ${p.label} at ${report.current_version} now: reload the page.`));
      }
      check.className = `check ${report.compatible ? "ok" : "refused"}`;
      check.replaceChildren(...lines);
      check.hidden = false;
    }

    async function preview(mode) {
      clearError();
      result.replaceChildren();
      const name = label.value.trim();
      if (!name) {
        label.focus();
        return;
      }
      if (protectedApprovals(name)) {
        refuseProtected(name);
        check.focus();
        return;
      }
      const p = { mode, label: name, version: Number(version.value), expect: shownVersion(name) };
      reset("Checking…");
      try {
        p.report = await call("POST", promptPath(promptName, "check"), { label: p.label, version: p.version });
      } catch (error) {
        reset();
        showError(explain(error));
        return;
      }
      plan = p;
      render(p);
      confirm.disabled = !p.report.compatible;
      forceRow.hidden = p.report.compatible;
      if (mode === "rollback") (p.report.compatible ? confirm : check).focus();
    }

    async function send() {
      if (!plan || plan.sending || confirm.disabled) return;
      if (protectedApprovals(plan.label)) {
        refuseProtected(plan.label);
        return;
      }
      const p = plan;
      p.sending = true;
      confirm.disabled = true;
      const data = {};
      if (reason.value.trim()) data.reason = reason.value.trim();
      if (force.checked) data.force = true;
      try {
        const answer =
          p.mode === "rollback"
            ? await call("POST", `${promptPath(promptName, "labels", p.label, "rollback")}?wait=5`, {
                expect: p.expect,
                ...data,
              })
            : await call("PUT", `${promptPath(promptName, "labels", p.label)}?wait=5`, {
                version: p.version,
                expect: p.expect,
                ...data,
              });
        const e = answer.event;
        const verb = e.action === "rollback" ? "Rolled back" : "Moved";
        const from = e.previous_version == null ? "unset" : e.previous_version;
        reset();
        reason.value = "";
        result.replaceChildren(
          el("p", "done", `${verb} ${e.label} ${from} → ${e.version} (rev ${e.rev}).`),
          answer.fleet ? el("p", "fleet", `Fleet: ${fleetText(answer.fleet)}.`) : null,
        );
      } catch (error) {
        reset();
        if (error.type === "LabelConflictError") {
          const now = error.detail.actual ? `it is at ${error.detail.actual} now` : "it is unset now";
          showError(`Someone moved ${p.label} meanwhile (${now}; this page showed ${p.expect || "unset"}): reload the page and preview again.`, reloadButton());
        } else {
          showError(explain(error));
        }
      }
    }

    form.addEventListener("submit", (event) => {
      event.preventDefault();
      preview("promote");
    });
    confirm.addEventListener("click", send);
    label.addEventListener("input", () => reset());
    version.addEventListener("change", () => reset());
    force.addEventListener("change", () => {
      if (plan && !plan.sending) confirm.disabled = !(plan.report.compatible || force.checked);
    });
    document.addEventListener("click", (event) => {
      const button = event.target.closest("button.rollback");
      if (!button) return;
      const row = button.closest("tr");
      label.value = row.dataset.label;
      version.value = row.dataset.rollbackTo;
      $("#move").scrollIntoView({ block: "nearest" });
      preview("rollback");
    });
    afterSwapHooks.push(() => {
      // A live change protected or moved the previewed label: the preview no longer holds.
      if (plan && !plan.sending && protectedApprovals(plan.label)) {
        refuseProtected(plan.label);
      } else if (plan && !plan.sending && shownVersion(plan.label) !== plan.expect) {
        reset(`${plan.label} moved meanwhile (now at ${shownVersion(plan.label) || "unset"}): preview again.`);
      }
    });
  }

  // -- protected labels: request a move, decide a request -------------------------------------------

  function protectedApprovals(name) {
    const row = $(`#labels tr[data-label="${CSS.escape(name)}"]`);
    return row && row.dataset.protected ? Number(row.dataset.protected) : 0;
  }

  function versionText(version) {
    return version == null || version === "" ? "unset" : version;
  }

  function openRequest(name) {
    const section = $("#request");
    const label = $("#request-label");
    if (!section || !label) return;
    section.hidden = false;
    label.value = name;
    section.scrollIntoView({ block: "nearest" });
    $("#request-version").focus();
  }

  function setupRequest() {
    document.addEventListener("click", (event) => {
      const button = event.target.closest("button.request-move");
      if (button) openRequest(button.dataset.label);
    });
    const form = $("#request-form");
    if (!form) return;
    const section = $("#request");
    const label = $("#request-label");
    const version = $("#request-version");
    const reason = $("#request-reason");
    const send = $("#request-send");
    const result = $("#request-result");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearError();
      result.replaceChildren();
      if (!label.value || !reason.value.trim()) {
        (label.value ? reason : label).focus();
        return;
      }
      send.disabled = true;
      try {
        const r = await call("POST", promptPath(promptName, "labels", label.value, "requests"), {
          version: Number(version.value),
          reason: reason.value.trim(),
        });
        const need = r.approvals_required;
        reason.value = "";
        result.replaceChildren(
          el("p", "done", `Requested ${r.label} ${versionText(r.from_version)} → ${r.version} (request ${r.id}).`),
          el("p", null, `It moves when ${need} other identit${need === 1 ? "y approves" : "ies approve"} it.`),
        );
        refresh();
      } catch (error) {
        showError(explain(error));
      } finally {
        send.disabled = false;
      }
    });
    // A live change protected the first label (or the last one no longer is): show or hide the form.
    afterSwapHooks.push(() => {
      section.hidden = label.options.length === 0;
    });
  }

  function setupDecide() {
    const panel = $("#decide");
    if (!panel) return;
    const plan = $("#decide-plan");
    const reasonRow = $("#decide-reason-row");
    const reason = $("#decide-reason");
    const confirm = $("#decide-confirm");
    const result = $("#decide-result");
    const verbs = { approve: "Approve", reject: "Reject", apply: "Apply" };
    let chosen = null; // {id, action, sending}

    function open(button) {
      const d = button.closest("tr[data-request]").dataset;
      chosen = { id: button.dataset.request, action: button.dataset.action };
      const move = `${d.label} of ${d.prompt}: ${versionText(d.from)} → ${d.to}, requested by ${d.author}`;
      const after = Number(d.approvals) + 1;
      const need = Number(d.required);
      const effect = {
        approve:
          after >= need
            ? "This approval completes the count: the label moves now."
            : `This is approval ${after} of ${need}: the label moves at the last one.`,
        apply: "The label moves now.",
        reject: "The request ends; the label stays where it is.",
      }[chosen.action];
      plan.className = "check";
      plan.replaceChildren(el("p", "plan", `${verbs[chosen.action]} the move of ${move}`), el("p", null, effect));
      reasonRow.hidden = chosen.action !== "reject";
      reason.value = "";
      confirm.disabled = false;
      clearError();
      result.replaceChildren();
      panel.hidden = false;
      panel.scrollIntoView({ block: "nearest" });
      confirm.focus();
    }

    function close() {
      chosen = null;
      panel.hidden = true;
    }

    function outcome(r) {
      const move = `${r.label} of ${r.prompt} ${versionText(r.from_version)} → ${r.version}`;
      if (r.state === "applied") return `Moved ${move} (rev ${r.applied_rev}).`;
      if (r.state === "rejected") return `Rejected the move of ${move}.`;
      if (r.state === "approved") return `Approved the move of ${move}: apply it to move the label.`;
      return `Approval recorded (${r.approvals.length} of ${r.approvals_required}) for the move of ${move}.`;
    }

    async function send() {
      if (!chosen || chosen.sending || confirm.disabled) return;
      const c = chosen;
      c.sending = true;
      confirm.disabled = true;
      const data = c.action === "reject" && reason.value.trim() ? { reason: reason.value.trim() } : undefined;
      try {
        const r = await call("POST", `/api/v1/requests/${encodeURIComponent(c.id)}/${c.action}?wait=5`, data);
        close();
        result.replaceChildren(
          el("p", "done", outcome(r)),
          r.fleet ? el("p", "fleet", `Fleet: ${fleetText(r.fleet)}.`) : null,
        );
      } catch (error) {
        close();
        showError(explain(error));
      }
      refresh();
    }

    document.addEventListener("click", (event) => {
      const button = event.target.closest("button.decide");
      if (button) open(button);
    });
    confirm.addEventListener("click", send);
    $("#decide-cancel").addEventListener("click", close);
    reason.addEventListener("keydown", (event) => {
      if (event.key === "Enter") send();
    });
    panel.addEventListener("keydown", (event) => {
      if (event.key === "Escape") close();
    });
    afterSwapHooks.push(() => {
      // A live change decided the request meanwhile: this decision no longer applies.
      if (!chosen || chosen.sending) return;
      const still = $(`button.decide[data-request="${CSS.escape(chosen.id)}"][data-action="${chosen.action}"]`);
      if (!still && !confirm.disabled) {
        confirm.disabled = true;
        plan.className = "check refused";
        plan.append(el("p", "warning", "This request changed meanwhile: it can no longer be decided this way."));
      }
    });
  }

  setupMove();
  setupRequest();
  setupDecide();
  follow();
})();
