// The official OpenAI SDK against keyrail: one non-streaming and one
// streaming chat completion. Prints one JSON line with what it returned.
import OpenAI from "openai";

const client = new OpenAI({ baseURL: process.env.KR_BASE_URL, apiKey: process.env.KR_TOKEN, maxRetries: 0 });
const out = {};
const r = await client.chat.completions.create({
  model: "gpt-4o", messages: [{ role: "user", content: "hello [[fake in=333 out=7]]" }],
});
out.text = r.choices[0].message.content;
out.usage = r.usage;
const stream = await client.chat.completions.create({
  model: "gpt-4o", stream: true, messages: [{ role: "user", content: "stream [[fake in=444 out=9]]" }],
});
let streamed = "";
for await (const chunk of stream) {
  streamed += chunk.choices[0]?.delta?.content ?? "";
  if (chunk.usage) out.stream_usage = chunk.usage;
}
out.streamed = streamed;
try {
  await new OpenAI({ baseURL: process.env.KR_BASE_URL, apiKey: "sk-proj-NOTAWORKSPACETOKEN00000000", maxRetries: 0 })
    .chat.completions.create({ model: "gpt-4o", messages: [{ role: "user", content: "x" }] });
  out.refused = false;
} catch (e) {
  out.refused = { status: e.status, code: e.code, message: e.message };
}
console.log(JSON.stringify(out));
