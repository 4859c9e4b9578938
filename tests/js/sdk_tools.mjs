// Scripted tool calls (tool=HEX) through the official SDKs' accumulating
// stream helpers, against the fake vendor directly
// (tests/integration/test_fakevendor_tools.py): each must rebuild the tool
// call whole from the streamed deltas.  KR_CMD is the command; prints one
// JSON line with what each SDK got.
import Anthropic from "@anthropic-ai/sdk";
import OpenAI from "openai";

const cmd = process.env.KR_CMD;
const hex = Buffer.from(cmd, "utf8").toString("hex");
const prompt = `[[fake tool=${hex}]] run it`;
const out = {};

const anthropic = new Anthropic({ baseURL: process.env.KR_BASE_URL, apiKey: "sk-ant-api03-x", maxRetries: 0 });
const tools = [{ name: "Bash", description: "run", input_schema: { type: "object", properties: { command: { type: "string" } } } }];
const msg = await anthropic.messages.stream({
  model: "claude-test", max_tokens: 1000, tools, messages: [{ role: "user", content: prompt }],
}).finalMessage();
out.anthropic = { stop_reason: msg.stop_reason, content: msg.content, usage: msg.usage };

const openai = new OpenAI({ baseURL: `${process.env.KR_BASE_URL}/v1`, apiKey: "sk-x", maxRetries: 0 });
const fn = { type: "function", function: { name: "shell", parameters: { type: "object", properties: { command: { type: "string" } } } } };
const chat = await openai.chat.completions.stream({
  model: "gpt-4o", tools: [fn], stream_options: { include_usage: true }, messages: [{ role: "user", content: prompt }],
}).finalChatCompletion();
out.chat = { finish_reason: chat.choices[0].finish_reason, tool_calls: chat.choices[0].message.tool_calls, usage: chat.usage };

const rtools = [{ type: "function", name: "exec_command", parameters: { type: "object", properties: { cmd: { type: "string" } } } }];
const types = [];
const rs = openai.responses.stream({ model: "gpt-5", tools: rtools, input: prompt });
let args = "";
rs.on("event", (ev) => {
  types.push(ev.type);
  if (ev.type === "response.function_call_arguments.delta") args += ev.delta;
});
const resp = await rs.finalResponse();
out.responses = { status: resp.status, output: resp.output, usage: resp.usage, types, streamed_args: args };
console.log(JSON.stringify(out));
