// The official OpenAI SDK's Responses API against the fake vendor directly
// (tests/integration/test_fakevendor_responses.py): non-streaming, streaming,
// the SDK's accumulating stream helper (with pad=) and an injected 429.
// Prints one JSON line with what it got.
import OpenAI from "openai";

const client = new OpenAI({ baseURL: process.env.KR_BASE_URL, apiKey: process.env.KR_TOKEN, maxRetries: 0 });
const out = {};
const r = await client.responses.create({
  model: process.env.KR_MODEL || "gpt-5", input: "hi [[fake in=333 cache_read=100 out=40 reasoning=25]]",
});
out.text = r.output_text;
out.status = r.status;
out.usage = r.usage;
const stream = await client.responses.create({
  model: process.env.KR_MODEL || "gpt-5", stream: true, input: "stream [[fake in=444 out=9]]",
});
out.types = [];
let streamed = "";
for await (const ev of stream) {
  out.types.push(ev.type);
  if (ev.type === "response.output_text.delta") streamed += ev.delta;
  if (ev.type === "response.completed") out.stream_usage = ev.response.usage;
}
out.streamed = streamed;
const fin = await client.responses.stream({ model: process.env.KR_MODEL || "gpt-5", input: "helper [[fake in=7 out=3 pad=5000]]" })
  .finalResponse();
out.helper = { text_len: fin.output_text.length, items: fin.output.length, usage: fin.usage };
try {
  await client.responses.create({ model: process.env.KR_MODEL || "gpt-5", input: "x [[fake mode=status status=429]]" });
  out.refused = false;
} catch (e) {
  out.refused = { status: e.status, type: e.type, message: e.message };
}
console.log(JSON.stringify(out));
