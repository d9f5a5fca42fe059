// A small AWS Lambda Runtime API client for Node.js, with no dependencies:
// what Lambda's own Node runtime does for a handler, so handlers written for
// Lambda run unmodified.
//
// - _HANDLER is "file.export" (file relative to LAMBDA_TASK_ROOT, found as
//   file.js, .mjs or .cjs); CommonJS (`exports.handler = ...`) and ES modules
//   (`export const handler = ...`) both load.
// - async handlers (a returned promise) and callback handlers
//   (`(event, context, callback)`) both answer.
// - `awslambda.streamifyResponse(handler)` makes a streaming handler,
//   `(event, responseStream, context)`: what it writes is posted to the
//   Runtime API as it comes (`Lambda-Runtime-Function-Response-Mode:
//   streaming`, chunked), `awslambda.HttpResponseStream.from(stream,
//   {statusCode, headers, cookies})` writes the HTTP prelude, and an error
//   after the first byte goes in the `Lambda-Runtime-Function-Error-Type` /
//   `-Body` trailers.
// - errors are reported as `{errorType, errorMessage, trace}`; a module that
//   fails to load is an init error.
// Works against stoke's worker and against AWS Lambda itself.

import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { Writable } from "node:stream";
import { pathToFileURL } from "node:url";

const API = process.env.AWS_LAMBDA_RUNTIME_API;
const BASE = "/2018-06-01/runtime";
const colon = API.lastIndexOf(":");
const HOST = API.slice(0, colon).replace(/^\[|\]$/g, "") || "127.0.0.1";
const PORT = Number(API.slice(colon + 1));
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const STREAMING = Symbol.for("aws.lambda.runtime.handler.streaming");
const PRELUDE_TYPE = "application/vnd.awslambda.http-integration-response";

/** One request to the Runtime API: {status, headers, body}. */
function request(method, p, body = "", headers = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: HOST, port: PORT, method, path: BASE + p, agent, headers: { "content-length": Buffer.byteLength(body), ...headers } },
      (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

function errorDoc(err) {
  const e = err instanceof Error ? err : new Error(String(err));
  return {
    errorType: e.name || "Error",
    errorMessage: e.message,
    trace: String(e.stack || "").split("\n"),
  };
}

async function postError(p, err) {
  const doc = errorDoc(err);
  await request("POST", p, JSON.stringify(doc), {
    "content-type": "application/json",
    "lambda-runtime-function-error-type": doc.errorType,
  });
}

/** The response stream a streaming handler writes to: the POST starts at
 * the first write (or the end), so the content type can still be set. */
class ResponseStream extends Writable {
  constructor(requestId) {
    super();
    this.requestId = requestId;
    this.contentType = "application/octet-stream";
    this.req = null;
    this.answered = new Promise((resolve, reject) => {
      this.resolveAnswer = resolve;
      this.rejectAnswer = reject;
    });
  }

  setContentType(type) {
    this.contentType = type;
  }

  open() {
    if (this.req) return this.req;
    this.req = http.request({
      host: HOST,
      port: PORT,
      method: "POST",
      path: `${BASE}/invocation/${this.requestId}/response`,
      agent,
      headers: {
        "lambda-runtime-function-response-mode": "streaming",
        "transfer-encoding": "chunked",
        "content-type": this.contentType,
        trailer: "Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body",
      },
    });
    this.req.on("response", (res) => {
      res.resume();
      res.on("end", () => this.resolveAnswer(res.statusCode));
    });
    this.req.on("error", (e) => this.rejectAnswer(e));
    return this.req;
  }

  get started() {
    return this.req !== null;
  }

  _write(chunk, encoding, callback) {
    const req = this.open();
    if (req.write(chunk, encoding)) callback();
    else req.once("drain", callback);
  }

  _final(callback) {
    this.open().end();
    callback();
  }

  /** End the stream with an error after its first byte: the trailers. */
  fail(err) {
    const doc = errorDoc(err);
    const req = this.open();
    req.addTrailers({
      "Lambda-Runtime-Function-Error-Type": doc.errorType,
      "Lambda-Runtime-Function-Error-Body": Buffer.from(JSON.stringify(doc)).toString("base64"),
    });
    req.end();
  }
}

globalThis.awslambda = {
  streamifyResponse(handler) {
    handler[STREAMING] = true;
    return handler;
  },
  HttpResponseStream: {
    from(stream, prelude) {
      stream.setContentType(PRELUDE_TYPE);
      stream.write(JSON.stringify(prelude ?? {}));
      stream.write(Buffer.alloc(8));
      return stream;
    },
  },
};

async function loadHandler() {
  const spec = process.env._HANDLER || "";
  const root = process.env.LAMBDA_TASK_ROOT || process.cwd();
  const dot = spec.lastIndexOf(".");
  if (dot <= 0) throw Object.assign(new Error(`_HANDLER ${JSON.stringify(spec)} is not of the form file.export`), { name: "Runtime.MalformedHandlerName" });
  const base = path.resolve(root, spec.slice(0, dot));
  const name = spec.slice(dot + 1);
  const file = ["", ".js", ".mjs", ".cjs"].map((ext) => base + ext).find((f) => fs.existsSync(f) && fs.statSync(f).isFile());
  if (!file) throw Object.assign(new Error(`cannot find module ${base}(.js|.mjs|.cjs)`), { name: "Runtime.ImportModuleError" });
  const mod = await import(pathToFileURL(file).href);
  const fn = mod[name] ?? mod.default?.[name];
  if (typeof fn !== "function") throw Object.assign(new Error(`${spec} is not a function exported by ${file}`), { name: "Runtime.HandlerNotFound" });
  return fn;
}

function contextOf(headers) {
  const deadline = Number(headers["lambda-runtime-deadline-ms"] || 0);
  return {
    awsRequestId: headers["lambda-runtime-aws-request-id"] || "",
    invokedFunctionArn: headers["lambda-runtime-invoked-function-arn"] || "",
    functionName: process.env.AWS_LAMBDA_FUNCTION_NAME || "",
    functionVersion: process.env.AWS_LAMBDA_FUNCTION_VERSION || "",
    memoryLimitInMB: process.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE || "",
    logGroupName: process.env.AWS_LAMBDA_LOG_GROUP_NAME || "",
    logStreamName: process.env.AWS_LAMBDA_LOG_STREAM_NAME || "",
    callbackWaitsForEmptyEventLoop: true,
    getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
    // stoke's additions: the event's idempotency key and attempt number.
    idempotencyKey: headers["stoke-idempotency-key"] || "",
    attempt: Number(headers["stoke-attempt"] || 1),
  };
}

/** Call a buffered handler, async or callback style. */
function callBuffered(fn, event, context) {
  return new Promise((resolve, reject) => {
    let settled = false;
    const once = (f) => (v) => {
      if (!settled) {
        settled = true;
        f(v);
      }
    };
    const ok = once(resolve);
    const fail = once(reject);
    const callback = (err, result) => (err ? fail(err) : ok(result));
    context.done = callback;
    context.succeed = (r) => ok(r);
    context.fail = (e) => fail(e);
    try {
      const r = fn(event, context, callback);
      if (r && typeof r.then === "function") r.then(ok, fail);
      else if (fn.length < 3) ok(r);
    } catch (e) {
      fail(e);
    }
  });
}

async function invoke(fn, requestId, event, context) {
  if (!fn[STREAMING]) {
    let body;
    try {
      const result = await callBuffered(fn, event, context);
      body = JSON.stringify(result === undefined ? null : result);
    } catch (e) {
      return postError(`/invocation/${requestId}/error`, e);
    }
    return request("POST", `/invocation/${requestId}/response`, body, { "content-type": "application/json" });
  }
  const stream = new ResponseStream(requestId);
  try {
    await fn(event, stream, context);
    if (!stream.writableEnded) stream.end();
  } catch (e) {
    if (!stream.started) return postError(`/invocation/${requestId}/error`, e);
    stream.fail(e);
  }
  await stream.answered;
}

let current = null;
function fatal(err) {
  const done = current ? postError(`/invocation/${current}/error`, err) : Promise.resolve();
  done.finally(() => process.exit(129));
}
process.on("uncaughtException", fatal);
process.on("unhandledRejection", fatal);

let handler;
try {
  handler = await loadHandler();
} catch (e) {
  console.error(e);
  await postError("/init/error", e);
  process.exit(1);
}

for (;;) {
  const next = await request("GET", "/invocation/next");
  const h = next.headers;
  for (const [header, variable] of [["lambda-runtime-trace-id", "_X_AMZN_TRACE_ID"], ["traceparent", "TRACEPARENT"]]) {
    if (h[header]) process.env[variable] = h[header];
    else delete process.env[variable];
  }
  const context = contextOf(h);
  current = context.awsRequestId;
  let event = null;
  try {
    event = next.body.length ? JSON.parse(next.body.toString("utf8")) : null;
  } catch (e) {
    await postError(`/invocation/${current}/error`, e);
    continue;
  }
  await invoke(handler, current, event, context);
  current = null;
}
