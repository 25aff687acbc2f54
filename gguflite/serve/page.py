"""The chat page served at ``GET /``: one HTML file, no build step, nothing from a CDN.

It keeps the conversation in the page, posts it to ``/v1/chat/completions`` with
``stream: true`` and appends each server-sent delta to the reply as it arrives. Text is
inserted with ``textContent`` (never as HTML). An API key typed in the key field is sent as
``Authorization: Bearer``. Element ids (``input``, ``send``, ``messages``) and the reply's
``data-state`` ("streaming", then "done" or "error") are what tests/test_server_page.py uses.
"""

from __future__ import annotations

PAGE_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>gguflite chat</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 0; display: flex; flex-direction: column;
         height: 100vh; background: #f6f6f4; color: #222; }
  header { padding: .6rem 1rem; background: #263238; color: #eee; display: flex; gap: 1rem;
           align-items: center; }
  header h1 { font-size: 1.05rem; margin: 0; flex: 1; }
  header input { width: 10rem; }
  #messages { flex: 1; overflow-y: auto; padding: 1rem; }
  .msg { max-width: 46rem; margin: 0 auto .8rem; padding: .6rem .8rem; border-radius: 8px;
         white-space: pre-wrap; line-height: 1.4; }
  .user { background: #dcedc8; }
  .assistant { background: #fff; border: 1px solid #ddd; }
  .error { background: #ffcdd2; }
  form { display: flex; gap: .5rem; padding: .8rem 1rem; background: #eceff1; }
  textarea { flex: 1; resize: none; font: inherit; padding: .5rem; height: 3rem; }
  button { font: inherit; padding: 0 1.2rem; }
</style>
</head>
<body>
<header>
  <h1>gguflite chat &mdash; <span id="model">model</span></h1>
  <label>max tokens <input id="max-tokens" type="number" value="256" min="1"
         style="width:5rem"></label>
  <input id="api-key" type="password" placeholder="API key (if any)">
  <button id="reset" type="button">New chat</button>
</header>
<div id="messages"></div>
<form id="form">
  <textarea id="input" placeholder="Type a message, Enter to send"></textarea>
  <button id="send" type="submit">Send</button>
</form>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let history = [];
let busy = false;

function headers() {
  const h = {"Content-Type": "application/json"};
  const key = $("api-key").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

function bubble(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  div.textContent = text;
  $("messages").appendChild(div);
  $("messages").scrollTop = $("messages").scrollHeight;
  return div;
}

async function loadModel() {
  try {
    const r = await fetch("/v1/models", {headers: headers()});
    if (r.ok) $("model").textContent = (await r.json()).data[0].id;
  } catch (e) { /* the header keeps its placeholder */ }
}

async function send(text) {
  busy = true;
  $("send").disabled = true;
  history.push({role: "user", content: text});
  bubble("user", text);
  const out = bubble("assistant", "");
  out.dataset.state = "streaming";
  let reply = "";
  try {
    const r = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(),
      body: JSON.stringify({model: $("model").textContent, messages: history, stream: true,
                            max_tokens: parseInt($("max-tokens").value, 10) || 256}),
    });
    if (!r.ok) {
      const body = await r.json().catch(() => ({}));
      throw new Error((body.error && body.error.message) || ("HTTP " + r.status));
    }
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buf += dec.decode(value, {stream: true});
      let cut;
      while ((cut = buf.indexOf("\\n\\n")) >= 0) {
        const line = buf.slice(0, cut).trim();
        buf = buf.slice(cut + 2);
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") continue;
        const ev = JSON.parse(data);
        if (ev.error) throw new Error(ev.error.message);
        const delta = ev.choices.length ? ev.choices[0].delta : {};
        if (delta.content) {
          reply += delta.content;
          out.textContent = reply;
          $("messages").scrollTop = $("messages").scrollHeight;
        }
      }
    }
    history.push({role: "assistant", content: reply});
    out.dataset.state = "done";
  } catch (e) {
    out.className = "msg error";
    out.textContent = (reply ? reply + "\\n" : "") + "[error: " + e.message + "]";
    out.dataset.state = "error";
    history.pop();
  } finally {
    busy = false;
    $("send").disabled = false;
  }
}

$("form").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("input").value.trim();
  if (!text || busy) return;
  $("input").value = "";
  send(text);
});
$("input").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("form").requestSubmit(); }
});
$("reset").addEventListener("click", () => { history = []; $("messages").textContent = ""; });
loadModel();
</script>
</body>
</html>
"""
