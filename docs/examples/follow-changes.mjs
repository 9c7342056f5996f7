// Follow promptreg's change stream from Node (18+, no packages): node follow-changes.mjs URL TOKEN [COUNT]
// Reconnects after a drop and resumes with Last-Event-ID: the server replays what was missed.
const [base, token, count = Infinity] = process.argv.slice(2);
let lastId = null, seen = 0;
while (seen < count) {
  try {
    const headers = { Authorization: `Bearer ${token}`, ...(lastId && { "Last-Event-ID": lastId }) };
    const res = await fetch(`${base}/api/v1/events`, { headers });
    if (!res.ok) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
    let buffer = "";
    for await (const chunk of res.body.pipeThrough(new TextDecoderStream())) {
      buffer += chunk;
      for (let end; (end = buffer.indexOf("\n\n")) >= 0; buffer = buffer.slice(end + 2)) {
        const f = Object.fromEntries(buffer.slice(0, end).split("\n").filter((l) => l && !l.startsWith(":"))
          .map((l) => [l.slice(0, l.indexOf(":")), l.slice(l.indexOf(":") + 1).trim()]));
        if (f.id) lastId = f.id;
        if (f.event === "ready" || f.event === "resync") console.log(`${f.event} at rev ${f.id}`); // resync: re-read state
        if (f.event !== "change") continue;
        const c = JSON.parse(f.data);
        console.log(`${c.rev} ${c.action} ${c.prompt}${c.label ? ` ${c.label} -> ${c.version}` : ""}`);
        if (++seen >= count) process.exit(0);
      }
    }
  } catch (err) { console.error(`stream: ${err.message}; reconnecting`); }
  await new Promise((r) => setTimeout(r, 1000));
}
