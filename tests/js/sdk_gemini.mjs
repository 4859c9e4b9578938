// The official Google Gen AI SDK (@google/genai) against the fake vendor's
// Gemini API (tests/integration/test_fakevendor_gemini.py), or anything
// serving it: generateContent, generateContentStream (alt=sse),
// countTokens, the model list and one model, a scripted tool call streamed
// and not, and an injected 429.  KR_BASE_URL is the base URL (the SDK adds
// /v1beta/models/...), KR_TOKEN the API key (sent as x-goog-api-key), KR_CMD
// the tool call's command.  Prints one JSON line with what the SDK returned.
// The SDK is loaded with require() so that NODE_PATH can point at one
// installed elsewhere (ESM imports ignore NODE_PATH):
//   NODE_PATH=/path/to/node_modules node tests/js/sdk_gemini.mjs
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { GoogleGenAI, ApiError } = require("@google/genai");

const ai = new GoogleGenAI({ apiKey: process.env.KR_TOKEN, httpOptions: { baseUrl: process.env.KR_BASE_URL } });
const model = "gemini-2.5-flash";
const out = {};

const r = await ai.models.generateContent({ model, contents: "hello [[fake in=333 out=7]]" });
out.text = r.text;
out.finish_reason = r.candidates[0].finishReason;
out.usage = r.usageMetadata;
out.model_version = r.modelVersion;
out.response_id = r.responseId;

const stream = await ai.models.generateContentStream({
  model,
  contents: "stream [[fake in=444 out=9 events=3 reasoning=2 cache_read=5 tool_use_prompt=4]]",
});
let streamed = "";
out.stream_usage = [];
out.stream_finish = [];
for await (const chunk of stream) {
  streamed += chunk.text ?? "";
  out.stream_usage.push(chunk.usageMetadata);
  out.stream_finish.push(chunk.candidates?.[0]?.finishReason ?? null);
}
out.streamed = streamed;

const c = await ai.models.countTokens({ model, contents: "count [[fake in=55 cache_read=6]]" });
out.count = { totalTokens: c.totalTokens, cachedContentTokenCount: c.cachedContentTokenCount };

const pager = await ai.models.list();
out.models = [];
for await (const m of pager) out.models.push(m.name);
const one = await ai.models.get({ model: "gemini-2.5-pro" });
out.model = { name: one.name, displayName: one.displayName, inputTokenLimit: one.inputTokenLimit };

if (process.env.KR_CMD) {
  const hex = Buffer.from(process.env.KR_CMD, "utf8").toString("hex");
  const tools = [{ functionDeclarations: [{ name: "run_shell_command", description: "run",
    parameters: { type: "OBJECT", properties: { command: { type: "STRING" } }, required: ["command"] } }] }];
  const contents = `[[fake tool=${hex}]] run it`;
  const t = await ai.models.generateContent({ model, contents, config: { tools } });
  out.tool = { function_calls: t.functionCalls, finish_reason: t.candidates[0].finishReason };
  const ts = await ai.models.generateContentStream({ model, contents, config: { tools } });
  const calls = [];
  let chunks = 0;
  for await (const chunk of ts) {
    chunks++;
    calls.push(...(chunk.functionCalls ?? []));
  }
  out.tool_stream = { function_calls: calls, chunks };
}

try {
  await ai.models.generateContent({ model, contents: "x [[fake mode=status status=429]]" });
  out.refused = false;
} catch (e) {
  out.refused = { is_api_error: e instanceof ApiError, status: e.status, message: e.message };
}
console.log(JSON.stringify(out));
