// The official `openai` Node package, unmodified, against `dgpt serve`. Prints what it got as
// one JSON line; check_web.py compares it with the server's own non-streamed answer.
// Usage: node openai_client.js '{"baseURL", "prompt", "maxTokens", "temperature", "seed"}'
"use strict";
const { OpenAI } = require("openai");

async function main() {
  const settings = JSON.parse(process.argv[2]);
  const client = new OpenAI({ baseURL: settings.baseURL, apiKey: "unused", maxRetries: 0,
                              timeout: 120000 });
  const result = { models: [] };
  for await (const model of client.models.list()) result.models.push(model.id);

  const request = {
    model: result.models[0],
    prompt: settings.prompt,
    max_tokens: settings.maxTokens,
    temperature: settings.temperature,
    seed: settings.seed,
  };
  const stream = await client.completions.create({ ...request, stream: true });
  result.streamed = "";
  result.chunks = 0;
  for await (const chunk of stream) {
    result.chunks++;
    const choice = chunk.choices[0];
    if (choice && choice.text) result.streamed += choice.text;
    if (choice && choice.finish_reason) result.streamedFinishReason = choice.finish_reason;
  }

  const completion = await client.completions.create(request);
  result.nonStreamed = completion.choices[0].text;
  result.finishReason = completion.choices[0].finish_reason;
  result.usage = completion.usage;
  result.model = completion.model;
  console.log(JSON.stringify(result));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
