// The manager console's page behaviour: draw the charts the server described, refresh
// them, count a segment while it is typed, preview a campaign's message.
(function () {
  "use strict";
  var charts = {};
  var csrf = document.body.dataset.csrf;

  function draw(el) {
    var source = document.getElementById(el.dataset.chart);
    if (!source) return;
    var chart = echarts.init(el);
    chart.setOption(JSON.parse(source.textContent));
    charts[el.dataset.chart] = chart;
  }
  document.querySelectorAll("[data-chart]").forEach(draw);
  window.addEventListener("resize", function () {
    Object.keys(charts).forEach(function (k) { charts[k].resize(); });
  });

  // Pages with data-refresh poll a JSON document {charts: {id: option}, numbers: {id: text}}.
  var refresh = document.querySelector("[data-refresh]");
  if (refresh) {
    var every = parseInt(refresh.dataset.every || "3000", 10);
    setInterval(function () {
      fetch(refresh.dataset.refresh, { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (data) {
          if (!data) return;
          if (refresh.dataset.status && data.status && data.status !== refresh.dataset.status) {
            location.reload();  // actions and the comparison depend on the status
            return;
          }
          Object.keys(data.charts || {}).forEach(function (id) {
            if (charts[id]) charts[id].setOption(data.charts[id], { replaceMerge: ["series", "xAxis", "yAxis", "title"] });
          });
          Object.keys(data.html || {}).forEach(function (id) {
            var el = document.getElementById(id);
            if (el) el.innerHTML = data.html[id];  // rendered and escaped by the server
          });
          Object.keys(data.numbers || {}).forEach(function (id) {
            var el = document.getElementById(id);
            if (el) el.textContent = data.numbers[id];
          });
        })
        .catch(function () {});
    }, every);
  }

  function debounce(fn, ms) {
    var timer;
    return function () { clearTimeout(timer); timer = setTimeout(fn, ms); };
  }

  function escapeHtml(s) {
    return s.replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }

  // A segment field with a live count: <textarea data-segment-count="#out">.
  document.querySelectorAll("[data-segment-count]").forEach(function (field) {
    var out = document.querySelector(field.dataset.segmentCount);
    var seq = 0;
    var check = debounce(function () {
      var mine = ++seq;
      var body = new URLSearchParams({ expression: field.value, csrf: csrf });
      fetch("/console/api/segment-count", { method: "POST", body: body, credentials: "same-origin" })
        .then(function (r) { return r.json(); })
        .then(function (data) {
          if (mine !== seq) return;
          if (data.error) {
            out.className = "live error";
            var pos = data.position || 0;
            var text = field.value;
            out.innerHTML = '<span class="error-text"></span> <span class="muted"></span>' +
              '<pre class="marked">' + escapeHtml(text.slice(0, pos)) + "<mark>" +
              escapeHtml(text.slice(pos, pos + 1) || " ") + "</mark>" + escapeHtml(text.slice(pos + 1)) + "</pre>";
            out.querySelector(".error-text").textContent = data.error;
            out.querySelector(".muted").textContent = data.position_label;
            out.dataset.position = String(pos);
            out.dataset.count = "";
          } else {
            out.className = "live ok";
            out.textContent = data.label;
            out.dataset.count = String(data.count);
            out.dataset.position = "";
          }
        })
        .catch(function () {});
    }, 300);
    field.addEventListener("input", check);
    if (field.value) check();
  });

  // The campaign form's live preview: <form data-preview="#samples">.
  document.querySelectorAll("form[data-preview]").forEach(function (form) {
    var out = document.querySelector(form.dataset.preview);
    var seq = 0;
    var show = debounce(function () {
      var mine = ++seq;
      fetch("/console/api/campaign-preview", {
        method: "POST", body: new URLSearchParams(new FormData(form)), credentials: "same-origin",
      })
        .then(function (r) { return r.json(); })
        .then(function (data) {
          if (mine !== seq) return;
          out.innerHTML = "";
          if (data.error) {
            var p = document.createElement("p");
            p.className = "live error";
            p.textContent = data.error;
            out.appendChild(p);
            return;
          }
          data.samples.forEach(function (s) {
            var div = document.createElement("div");
            div.className = "sample";
            div.dataset.locale = s.locale;
            var head = document.createElement("div");
            head.className = "muted";
            head.textContent = s.customer + " · " + s.variant + " · " + s.locale;
            div.appendChild(head);
            div.appendChild(document.createTextNode(s.text));
            out.appendChild(div);
          });
        })
        .catch(function () {});
    }, 400);
    form.addEventListener("input", show);
    form.addEventListener("change", show);
    show();
  });
})();
