// The page's calls to the server's JSON API (documented in the README).

export class ApiError extends Error {}

async function errorOf(response) {
  try {
    const body = await response.json();
    if (body && body.error) return new ApiError(body.error);
  } catch (_) { /* not JSON */ }
  return new ApiError(`${response.status} ${response.statusText}`);
}

export async function getJSON(url) {
  const response = await fetch(url);
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

export async function send(url, method, body, contentType = "application/json") {
  const response = await fetch(url, {
    method, body: contentType === "application/json" ? JSON.stringify(body) : body,
    headers: { "Content-Type": contentType },
  });
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

export function runUrl(run, path) {
  return `/api/runs/${encodeURIComponent(run)}/${path}`;
}

// POST a job (generation or inpainting) and call handlers[event](data) for each
// server-sent event until the stream ends. Aborting `signal` closes the connection, which
// cancels the job on the server.
export async function streamJob(url, body, handlers, signal) {
  const response = await fetch(url, {
    method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" }, signal,
  });
  if (!response.ok) throw await errorOf(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (data && handlers[event]) await handlers[event](JSON.parse(data));  // in order, each finished
    }
  }
}
