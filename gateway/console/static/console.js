// The web console's only script: copy a new key to the clipboard, and run the
// playground's request (or its job, read every second until it ends). Everything else is plain HTML forms. Nothing is stored in
// the browser: the key typed into the playground goes with its one request only.
"use strict";

function copyFrom(button) {
  var target = document.getElementById(button.dataset.copy);
  var said = document.querySelector('[data-copied-for="' + button.dataset.copy + '"]');
  if (!target) { return; }
  function done(text) { if (said) { said.textContent = text; } }
  target.select();
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(target.value).then(
      function () { done("Copied."); },
      function () { done("Press Ctrl+C (or Cmd+C) to copy the selected key."); });
  } else {
    done("Press Ctrl+C (or Cmd+C) to copy the selected key.");
  }
}

function describeError(status, body) {
  if (body && body.error && body.error.message) { return body.error.message + " (HTTP " + status + ")"; }
  return "The request failed (HTTP " + status + ").";
}

// Milliseconds between two reads of a job the playground follows.
var JOB_POLL_MS = 1000;
var JOB_ENDED = { succeeded: true, failed: true, canceled: true };

function answerOf(response) {
  return response.json().catch(function () { return null; }).then(function (json) {
    if (!response.ok) { throw new Error(describeError(response.status, json)); }
    return json;
  });
}

function showImage(result, json, prompt) {
  var image = json && json.data && json.data[0];
  if (!image || !image.b64_json) { throw new Error("The answer held no image."); }
  var img = document.createElement("img");
  img.src = "data:image/png;base64," + image.b64_json;
  img.alt = "Generated image for: " + prompt;
  result.appendChild(img);
}

// Read the job until it ends: its status on the page each time, then the image.
function followJob(job, key, status) {
  status.textContent = "Job " + job.id + ": " + job.status + "…";
  if (JOB_ENDED[job.status]) {
    if (job.status === "succeeded") { return Promise.resolve(job); }
    var why = job.error && job.error.message ? ": " + job.error.message : ".";
    return Promise.reject(new Error("Job " + job.id + " " + job.status + why));
  }
  return new Promise(function (resolve) { setTimeout(resolve, JOB_POLL_MS); }).then(function () {
    return fetch("/v1/images/jobs/" + encodeURIComponent(job.id), {
      credentials: "omit",
      cache: "no-store",
      headers: { "Authorization": "Bearer " + key }
    });
  }).then(answerOf).then(function (next) { return followJob(next, key, status); });
}

function runPlayground(form) {
  var status = document.getElementById("p-status");
  var result = document.getElementById("p-result");
  var button = form.querySelector('button[type="submit"]');
  var key = form.elements.key.value.trim();
  var asJob = form.elements.job && form.elements.job.checked;
  var body = {
    model: form.elements.model.value,
    size: form.elements.size.value,
    prompt: form.elements.prompt.value,
    n: 1,
    response_format: "b64_json"
  };
  var headers = { "Content-Type": "application/json", "Authorization": "Bearer " + key };
  if (asJob) { headers.Prefer = "respond-async"; }
  status.textContent = asJob ? "Submitting the job…" : "Generating…";
  result.replaceChildren();
  button.disabled = true;
  fetch(form.dataset.endpoint, {
    method: "POST",
    credentials: "omit",
    cache: "no-store",
    headers: headers,
    body: JSON.stringify(body)
  }).then(answerOf).then(function (json) {
    if (asJob && json && json.object === "image.job") { return followJob(json, key, status); }
    return json;
  }).then(function (json) {
    showImage(result, json, body.prompt);
    status.textContent = asJob && json.id ? "Job " + json.id + ": done." : "Done.";
  }).catch(function (error) {
    status.textContent = error.message;
  }).finally(function () {
    button.disabled = false;
  });
}

document.addEventListener("click", function (event) {
  var button = event.target.closest("button[data-copy]");
  if (button) { copyFrom(button); }
});

document.addEventListener("DOMContentLoaded", function () {
  var form = document.getElementById("playground");
  if (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      runPlayground(form);
    });
  }
});
