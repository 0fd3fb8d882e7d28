// The console's buttons: each carries the documented API call it makes (data-method, data-url,
// data-body). Before calling, it asks (data-confirm, where "{n}" becomes how many the call
// takes: the ticked dead letters for data-selection, or the count a redrive dry run gives for
// data-counted). The answer is said in #outcome, and the page reloads after a success.
'use strict';
(function () {
  function say(text, bad) {
    var o = document.getElementById('outcome');
    if (!o) return;
    o.textContent = text;
    o.className = bad ? 'bad' : 'good';
  }

  async function call(method, url, body) {
    var init = { method: method, headers: {}, credentials: 'same-origin' };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    var resp = await fetch(url, init);
    var answer = null;
    try { answer = await resp.json(); } catch (_) { answer = null; }
    return { ok: resp.ok, status: resp.status, answer: answer };
  }

  function failure(r) {
    var why = r.answer && r.answer.error ? ': ' + r.answer.error : '';
    return 'The API answered ' + r.status + why;
  }

  function ticked() {
    var boxes = document.querySelectorAll('input[name="seq"]:checked');
    return Array.prototype.map.call(boxes, function (b) { return Number(b.value); });
  }

  async function howMany(button, body) {
    if (button.dataset.selection) {
      var seqs = ticked();
      body.sequences = seqs;
      return seqs.length;
    }
    if (button.dataset.counted) {
      var dry = await call('POST', '/system/dead-letters/redrive',
        Object.assign({}, body, { dry_run: true }));
      if (!dry.ok) throw new Error(failure(dry));
      return dry.answer.redriven.length;
    }
    return null;
  }

  async function act(button) {
    var body = button.dataset.body ? JSON.parse(button.dataset.body) : undefined;
    var n = await howMany(button, body);
    if (n === 0) {
      say(button.dataset.selection ? 'Tick at least one dead letter first.' : 'No dead letter matches.', true);
      return;
    }
    var question = button.dataset.confirm;
    if (question && !window.confirm(question.replace('{n}', String(n)))) return;
    button.disabled = true;
    var done = await call(button.dataset.method, button.dataset.url, body);
    if (!done.ok) {
      button.disabled = false;
      say(failure(done), true);
      return;
    }
    say(button.textContent + ': done.', false);
    setTimeout(function () { window.location.reload(); }, 500);
  }

  document.addEventListener('click', function (e) {
    var button = e.target.closest('button.act');
    if (!button) return;
    e.preventDefault();
    act(button).catch(function (err) { say(String(err.message || err), true); });
  });
})();
