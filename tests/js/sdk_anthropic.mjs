// The official Anthropic SDK against keyrail: one non-streaming and one
// streaming call. Prints one JSON line with what the SDK returned.
import Anthropic from "@anthropic-ai/sdk";

const client = new Anthropic({ baseURL: process.env.KR_BASE_URL, apiKey: process.env.KR_TOKEN, maxRetries: 0 });
const out = {};
const msg = await client.messages.create({
  model: "claude-sonnet-4-5", max_tokens: 64,
  messages: [{ role: "user", content: "hello [[fake in=111 out=12]]" }],
});
out.text = msg.content[0].text;
out.usage = msg.usage;
const stream = client.messages.stream({
  model: "sonnet", max_tokens: 64,
  messages: [{ role: "user", content: "stream please [[fake in=222 out=20 events=10]]" }],
});
let streamed = "";
stream.on("text", (t) => { streamed += t; });
const final = await stream.finalMessage();
out.streamed = streamed;
out.stream_usage = final.usage;
try {
  await new Anthropic({ baseURL: process.env.KR_BASE_URL, apiKey: "sk-ant-oat01-NOTAWORKSPACETOKEN000000", maxRetries: 0 })
    .messages.create({ model: "claude-sonnet-4-5", max_tokens: 8, messages: [{ role: "user", content: "x" }] });
  out.refused = false;
} catch (e) {
  out.refused = { status: e.status, type: e.error?.error?.type, message: e.error?.error?.message, request_id: e.requestID ?? e.request_id ?? null };
}
console.log(JSON.stringify(out));
