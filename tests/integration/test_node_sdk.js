// tests/integration/test_node_sdk.js — the client half of
// integration/test_node_sdk: the official OpenAI Node SDK (the `openai`
// package scripts/setup pins into .loom/node, on NODE_PATH), used unchanged
// against a loom gateway serving a random-weight Qwen2 model "q".
//
//   node test_node_sdk.js MODE BASE_URL CASES_FILE
//
// MODE is schema | object | tools | stream | n. Each asserts the shapes the
// SDK hands back (node:assert; any failure exits 1 with its message) and
// appends one JSON line {name, schema, output} per structured output to
// CASES_FILE, which the C test validates with tests/common/json_validate.py
// (python3-jsonschema). The model is noise except where constrained, so
// nothing here looks at content beyond its structure.
'use strict';
const assert = require('node:assert/strict');
const fs = require('node:fs');
const sdk = require('openai');
const OpenAI = sdk.OpenAI || sdk.default || sdk;

const [mode, base, casesFile] = process.argv.slice(2);
const client = new OpenAI({ baseURL: base + '/v1', apiKey: 'x', maxRetries: 0, timeout: 120000 });
const model = 'q';

// A nested object with required fields, an enum and an array with minItems;
// strict as OpenAI defines it (every property required, no others).
const PROFILE = {
  type: 'object',
  properties: {
    user: {
      type: 'object',
      properties: {
        name: { type: 'string', maxLength: 12 },
        age: { type: 'integer', minimum: 0, maximum: 130 },
      },
      required: ['name', 'age'],
      additionalProperties: false,
    },
    role: { enum: ['admin', 'editor', 'viewer'] },
    tags: { type: 'array', items: { type: 'string', maxLength: 8 }, minItems: 2, maxItems: 4 },
  },
  required: ['user', 'role', 'tags'],
  additionalProperties: false,
};
const RESPONSE_FORMAT = {
  type: 'json_schema',
  json_schema: { name: 'profile', schema: PROFILE, strict: true },
};

const WEATHER = {
  type: 'object',
  properties: {
    city: { type: 'string', maxLength: 10 },
    days: { type: 'integer', minimum: 1, maximum: 7 },
    unit: { enum: ['C', 'F'] },
  },
  required: ['city', 'days', 'unit'],
  additionalProperties: false,
};
const TIME = {
  type: 'object',
  properties: { tz: { type: 'string', pattern: '^[A-Z]{3}$' } },
  required: ['tz'],
  additionalProperties: false,
};
const PARAMS = { get_weather: WEATHER, get_time: TIME };
const TOOLS = [
  { type: 'function', function: { name: 'get_weather', description: 'Weather', parameters: WEATHER, strict: true } },
  { type: 'function', function: { name: 'get_time', description: 'Time', parameters: TIME, strict: true } },
];
const named = (name) => ({ type: 'function', function: { name } });
const ask = (text) => [{ role: 'user', content: text }];

function addCase(name, schema, output) {
  assert.equal(typeof output, 'string', name + ': output is not a string');
  JSON.parse(output); // must parse here too
  fs.appendFileSync(casesFile, JSON.stringify({ name, schema, output }) + '\n');
  console.log(name + ': ' + output);
}

// A non-streamed chat completion's one choice, checked for its shape.
// usage is checked unless noUsage (the stream() helper's final completion
// has none without stream_options).
function oneChoice(r, finish, noUsage) {
  assert.equal(r.object, 'chat.completion');
  assert.equal(typeof r.id, 'string');
  assert.equal(r.choices.length, 1);
  const c = r.choices[0];
  assert.equal(c.index, 0);
  assert.equal(c.message.role, 'assistant');
  assert.equal(c.finish_reason, finish, 'finish_reason');
  if (!noUsage) assert.ok(r.usage && r.usage.completion_tokens > 0, 'usage');
  return c;
}

// message.tool_calls of a forced call: one call of a tool in TOOLS (want, if
// given), whose arguments parse; each is a validation case.
function checkToolCalls(tag, calls, want) {
  assert.ok(Array.isArray(calls), tag + ': no tool_calls');
  assert.equal(calls.length, 1, tag + ': want one tool call');
  const tc = calls[0];
  assert.equal(tc.type, 'function');
  assert.equal(typeof tc.id, 'string');
  assert.ok(tc.id.length > 0);
  assert.ok(tc.function.name in PARAMS, tag + ': unknown function ' + tc.function.name);
  if (want) assert.equal(tc.function.name, want);
  addCase(tag + '/' + tc.function.name, PARAMS[tc.function.name], tc.function.arguments);
  return tc;
}

// Reassembles a stream from the SDK's async iterator, per choice index:
// content, tool calls (deltas merged by their index, as OpenAI streams them),
// finish reasons; counts chunks and keeps the usage chunk.
async function collect(stream) {
  const out = { chunks: 0, choices: {}, usage: null };
  for await (const chunk of stream) {
    out.chunks++;
    assert.equal(chunk.object, 'chat.completion.chunk');
    if (chunk.usage) out.usage = chunk.usage;
    for (const ch of chunk.choices) {
      const acc = (out.choices[ch.index] ??= { content: '', tool_calls: [], finish: null, role: null });
      const d = ch.delta || {};
      if (d.role) acc.role = d.role;
      if (typeof d.content === 'string') acc.content += d.content;
      for (const t of d.tool_calls || []) {
        const tc = (acc.tool_calls[t.index] ??= { id: null, type: null, function: { name: '', arguments: '' } });
        if (t.id) tc.id = t.id;
        if (t.type) tc.type = t.type;
        if (t.function?.name) tc.function.name += t.function.name;
        if (t.function?.arguments) tc.function.arguments += t.function.arguments;
      }
      if (ch.finish_reason) acc.finish = ch.finish_reason;
    }
  }
  return out;
}

const modes = {
  // response_format json_schema (strict), through create() and through
  // parse(), which JSON.parses a json_schema reply into message.parsed.
  async schema() {
    const r = await client.chat.completions.create({
      model, messages: ask('Describe a user.'), max_tokens: 400, seed: 11,
      response_format: RESPONSE_FORMAT,
    });
    const c = oneChoice(r, 'stop');
    addCase('schema/create', PROFILE, c.message.content);
    const p = await client.chat.completions.parse({
      model, messages: ask('Another user.'), max_tokens: 400, seed: 12,
      response_format: RESPONSE_FORMAT,
    });
    const pc = oneChoice(p, 'stop');
    assert.deepEqual(pc.message.parsed, JSON.parse(pc.message.content));
    addCase('schema/parse', PROFILE, pc.message.content);
  },

  // response_format json_object, plain and streamed; logit_bias makes the
  // random model close its strings and objects soon.
  async object() {
    const bias = { 92: 12, 1: 12 };
    const r = await client.chat.completions.create({
      model, messages: ask('Any JSON object.'), max_tokens: 300, seed: 21, logit_bias: bias,
      response_format: { type: 'json_object' },
    });
    const c = oneChoice(r, 'stop');
    const o = JSON.parse(c.message.content);
    assert.ok(o !== null && typeof o === 'object' && !Array.isArray(o), 'not an object');
    addCase('object/create', { type: 'object' }, c.message.content);
    const s = await collect(await client.chat.completions.create({
      model, messages: ask('Any JSON object.'), max_tokens: 300, seed: 22, logit_bias: bias,
      response_format: { type: 'json_object' }, stream: true,
    }));
    assert.ok(s.chunks > 1, 'one chunk');
    assert.equal(s.choices[0].finish, 'stop');
    addCase('object/stream', { type: 'object' }, s.choices[0].content);
  },

  // tools with tool_choice required and named; parse() fills parsed_arguments
  // of strict tools; the assistant message the SDK returned goes back in the
  // next request's messages with a tool result, as an SDK user writes it.
  async tools() {
    const req = await client.chat.completions.create({
      model, messages: ask('Weather or time?'), max_tokens: 300, seed: 31,
      tools: TOOLS, tool_choice: 'required',
    });
    let c = oneChoice(req, 'tool_calls');
    checkToolCalls('tools/required', c.message.tool_calls, null);
    const byName = await client.chat.completions.create({
      model, messages: ask('Time in Paris?'), max_tokens: 300, seed: 32,
      tools: TOOLS, tool_choice: named('get_time'),
    });
    c = oneChoice(byName, 'tool_calls');
    const tc = checkToolCalls('tools/named', c.message.tool_calls, 'get_time');
    assert.equal(JSON.parse(tc.function.arguments).tz.length, 3);
    const p = await client.chat.completions.parse({
      model, messages: ask('Weather in Oslo?'), max_tokens: 300, seed: 33,
      tools: TOOLS, tool_choice: named('get_weather'),
    });
    c = oneChoice(p, 'tool_calls');
    const ptc = checkToolCalls('tools/parse', c.message.tool_calls, 'get_weather');
    assert.deepEqual(ptc.function.parsed_arguments, JSON.parse(ptc.function.arguments));
    // the round trip: the returned message and a tool result, then a reply
    // held to a schema
    const next = await client.chat.completions.create({
      model, max_tokens: 400, seed: 34, tools: TOOLS, response_format: RESPONSE_FORMAT,
      messages: [...ask('Time in Paris?'), byName.choices[0].message,
        { role: 'tool', tool_call_id: tc.id, content: '{"time": "12:00"}' }],
    });
    addCase('tools/after-result', PROFILE, oneChoice(next, 'stop').message.content);
  },

  // the same streamed: the SDK's iterator (content and tool-call argument
  // deltas reassembled here) and its stream() helper, which reassembles
  // chunks itself into finalChatCompletion().
  async stream() {
    const s = await collect(await client.chat.completions.create({
      model, messages: ask('Describe a user.'), max_tokens: 400, seed: 41,
      response_format: RESPONSE_FORMAT, stream: true, stream_options: { include_usage: true },
    }));
    assert.ok(s.chunks > 2, 'chunks');
    assert.deepEqual(Object.keys(s.choices), ['0']);
    assert.equal(s.choices[0].role, 'assistant');
    assert.equal(s.choices[0].finish, 'stop');
    assert.ok(s.usage && s.usage.completion_tokens > 0, 'no usage chunk');
    addCase('stream/schema', PROFILE, s.choices[0].content);
    for (const [tag, choice, want] of [['required', 'required', null],
      ['named', named('get_weather'), 'get_weather']]) {
      const t = await collect(await client.chat.completions.create({
        model, messages: ask('Weather?'), max_tokens: 300, seed: 42,
        tools: TOOLS, tool_choice: choice, stream: true,
      }));
      assert.ok(t.chunks > 1, 'chunks');
      assert.equal(t.choices[0].finish, 'tool_calls');
      checkToolCalls('stream/' + tag, t.choices[0].tool_calls, want);
    }
    const helper = client.chat.completions.stream({
      model, messages: ask('Time?'), max_tokens: 300, seed: 43,
      tools: TOOLS, tool_choice: named('get_time'),
    });
    let done = null;
    helper.on('tool_calls.function.arguments.done', (e) => { done = e; });
    const fin = await helper.finalChatCompletion();
    const c = oneChoice(fin, 'tool_calls', true);
    const tc = checkToolCalls('stream/helper', c.message.tool_calls, 'get_time');
    assert.ok(done, 'no tool_calls.function.arguments.done event');
    assert.equal(done.name, 'get_time');
    assert.deepEqual(done.parsed_arguments, JSON.parse(tc.function.arguments));
    const hs = client.chat.completions.stream({
      model, messages: ask('Describe a user.'), max_tokens: 400, seed: 44,
      response_format: RESPONSE_FORMAT,
    });
    let deltas = '';
    hs.on('content.delta', (e) => { deltas += e.delta; });
    const hfin = await hs.finalChatCompletion();
    assert.equal(hfin.choices[0].finish_reason, 'stop');
    assert.equal(hfin.choices[0].message.content, deltas);
    addCase('stream/helper-schema', PROFILE, deltas);
  },

  // n = 2 with a seed: two choices, indexes 0 and 1, each held to the schema;
  // streamed, the chunks of both choices reassembled by index.
  async n() {
    const r = await client.chat.completions.create({
      model, messages: ask('Two users.'), max_tokens: 400, seed: 51, n: 2,
      response_format: RESPONSE_FORMAT,
    });
    assert.equal(r.choices.length, 2);
    assert.deepEqual(r.choices.map((c) => c.index), [0, 1]);
    for (const c of r.choices) {
      assert.equal(c.finish_reason, 'stop');
      addCase('n/create/' + c.index, PROFILE, c.message.content);
    }
    const s = await collect(await client.chat.completions.create({
      model, messages: ask('Two users.'), max_tokens: 400, seed: 51, n: 2,
      response_format: RESPONSE_FORMAT, stream: true,
    }));
    assert.deepEqual(Object.keys(s.choices), ['0', '1']);
    for (const i of [0, 1]) {
      assert.equal(s.choices[i].finish, 'stop');
      assert.equal(s.choices[i].role, 'assistant');
      // seeded: streamed equals non-streamed, choice by choice
      assert.equal(s.choices[i].content, r.choices[i].message.content);
      addCase('n/stream/' + i, PROFILE, s.choices[i].content);
    }
  },
};

if (!modes[mode]) {
  console.error('usage: node test_node_sdk.js schema|object|tools|stream|n BASE_URL CASES_FILE');
  process.exit(2);
}
modes[mode]().then(
  () => process.exit(0),
  (e) => { console.error('node SDK ' + mode + ': ' + (e.stack || e) + (e.error ? '\n' + JSON.stringify(e.error) : '')); process.exit(1); });
